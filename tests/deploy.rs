//! The deployment files, checked where no container engine runs: the
//! manifests' invariants (host network, probes on the real stats paths and
//! port, the ConfigMap mounted where the image reads its configuration,
//! drain within the grace period), and the binary run on the ConfigMap
//! exactly as the kubelet lays it out, through a `..data` swap.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn documents(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo(path)).expect("manifest");
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

/// The data of the ConfigMap named `name` in `docs`.
fn configmap_data(docs: &[Yaml], name: &str) -> Vec<(String, String)> {
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("ConfigMap {name}"));
    let data = cm["data"].as_hash().expect("data");
    data.iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("key").to_string(),
                v.as_str().expect("value").to_string(),
            )
        })
        .collect()
}

/// The port of `[stats] bind` in a switchyard.toml.
fn stats_port(toml_text: &str) -> i64 {
    let value: toml::Table = toml::from_str(toml_text).expect("toml");
    let bind = value["stats"]["bind"].as_str().expect("stats bind");
    bind.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// `/etc/switchyard/../switchyard-stats` → `/etc/switchyard-stats`.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Checks one DaemonSet against its ConfigMap and the image.
fn check_daemonset(ds: &Yaml, configmaps: &[Yaml]) {
    let name = ds["metadata"]["name"].as_str().expect("name");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostNetwork"].as_bool(),
        Some(true),
        "{name}: hostNetwork"
    );
    assert_eq!(
        pod["dnsPolicy"].as_str(),
        Some("ClusterFirstWithHostNet"),
        "{name}: dnsPolicy"
    );
    assert!(
        !pod["nodeSelector"]["node-role.kubernetes.io/infra"].is_badvalue(),
        "{name}: infra nodes"
    );
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let config = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("--config");
    let drain: i64 = args
        .iter()
        .position(|a| *a == "--drain")
        .and_then(|i| args[i + 1].parse().ok())
        .expect("--drain");
    assert!(
        pod["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("grace")
            > drain,
        "{name}: grace covers the drain"
    );
    // The ConfigMap volume is mounted where --config reads.
    let volume = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| !v["configMap"].is_badvalue())
        .expect("configMap volume");
    let mount = container["volumeMounts"]
        .as_vec()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("config mount");
    let mount_path = mount["mountPath"].as_str().expect("mountPath");
    assert_eq!(
        Path::new(config).parent(),
        Some(Path::new(mount_path)),
        "{name}: config under the mount"
    );
    let cm_name = volume["configMap"]["name"]
        .as_str()
        .expect("configMap name");
    let data = configmap_data(configmaps, cm_name);
    let toml_file = Path::new(config)
        .file_name()
        .and_then(|f| f.to_str())
        .expect("file name");
    let (_, toml_text) = data
        .iter()
        .find(|(k, _)| k == toml_file)
        .expect("switchyard.toml in the ConfigMap");
    // Probes hit the real stats paths on the configured stats port.
    let port = stats_port(toml_text);
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz"),
        "{name}"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz/ready"),
        "{name}"
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["port"].as_i64(),
        Some(port),
        "{name}: liveness port"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["port"].as_i64(),
        Some(port),
        "{name}: readiness port"
    );
    // The stats port answers on the node's addresses: everything but the
    // health paths asks for a password, read from a mounted Secret.
    let value: toml::Table = toml::from_str(toml_text).expect("toml");
    let stats = value["stats"].as_table().expect("[stats]");
    assert!(stats.contains_key("user"), "{name}: stats user");
    let password = stats["password_file"]
        .as_str()
        .expect("stats password_file");
    let password_dir = Path::new(config)
        .parent()
        .expect("config dir")
        .join(password)
        .parent()
        .map(normalise)
        .expect("password dir");
    let secret_volume = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| {
            container["volumeMounts"]
                .as_vec()
                .expect("mounts")
                .iter()
                .any(|m| {
                    m["name"] == v["name"]
                        && Path::new(m["mountPath"].as_str().unwrap_or("")) == password_dir
                })
        })
        .unwrap_or_else(|| panic!("{name}: a volume mounted at {}", password_dir.display()));
    assert_eq!(
        secret_volume["secret"]["secretName"].as_str(),
        Some("switchyard-stats"),
        "{name}: the password comes from a Secret"
    );
    // Least privilege: non-root, only the capability to bind low ports.
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true),
        "{name}"
    );
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_i64(),
        Some(10001),
        "{name}: the image's user"
    );
    let caps = &container["securityContext"]["capabilities"];
    assert_eq!(caps["drop"][0].as_str(), Some("ALL"), "{name}");
    // The image's binary carries the file capability to bind 80 and 443:
    // it counts only without no_new_privs, so a shard that binds a port
    // below 1024 allows privilege escalation, and one that does not keeps
    // no_new_privs; the bounding set holds the capability either way (the
    // kernel refuses to run a binary whose file capability it lacks).
    let listeners = value["listener"].as_array().expect("[[listener]]");
    let low = listeners.iter().any(|l| {
        l["bind"]
            .as_str()
            .and_then(|b| b.rsplit(':').next()?.parse::<u16>().ok())
            .is_some_and(|port| port < 1024)
    });
    let escalation = container["securityContext"]["allowPrivilegeEscalation"].as_bool();
    assert_eq!(escalation, Some(low), "{name}: allowPrivilegeEscalation");
    let added = caps["add"][0].as_str();
    assert_eq!(added, Some("NET_BIND_SERVICE"), "{name}: capabilities");
    assert!(
        !container["resources"]["requests"].is_badvalue(),
        "{name}: resources"
    );
}

#[test]
fn manifests_hold_their_invariants() {
    let mut configmaps = documents("docker/k8s/configmap.yaml");
    configmaps.extend(documents("docker/k8s/shard-internal.yaml"));
    let mut daemonsets = documents("docker/k8s/daemonset.yaml");
    daemonsets.extend(documents("docker/k8s/shard-internal.yaml"));
    let sets = of_kind(&daemonsets, "DaemonSet");
    assert_eq!(sets.len(), 2, "the default shard and the internal one");
    for ds in &sets {
        check_daemonset(ds, &configmaps);
    }
    let secrets = documents("docker/k8s/secret.yaml");
    assert_eq!(secrets[0]["type"].as_str(), Some("kubernetes.io/tls"));
    assert_eq!(
        secrets[1]["metadata"]["name"].as_str(),
        Some("switchyard-stats")
    );
    let dockerfile = std::fs::read_to_string(repo("docker/Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("cap_net_bind_service=+ep"));
    assert!(dockerfile.contains("+crt-static"), "a static binary");
    // What a registry build makes is what docker/image.sh builds and tests.
    let last_stage = |text: &str| -> Vec<String> {
        let from = text.rfind("\nFROM ").expect("a FROM");
        text[from..]
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.replace("--from=build-context ", ""))
            .collect()
    };
    let containerfile =
        std::fs::read_to_string(repo("docker/Containerfile")).expect("Containerfile");
    let stage = last_stage(&dockerfile);
    assert_eq!(stage, last_stage(&format!("\n{containerfile}")));
    assert!(stage.contains(&"USER 10001:10001".to_string()), "{stage:?}");
    assert!(
        stage.contains(&"STOPSIGNAL SIGTERM".to_string()),
        "{stage:?}"
    );
    assert!(
        containerfile.contains("\"/etc/switchyard/switchyard.toml\""),
        "the image reads the mounted config"
    );
}

/// Writes `files` as a ConfigMap volume at `dir`: a timestamped directory,
/// `..data` pointing at it, and one symlink per key through `..data`.
fn publish(dir: &Path, version: u32, files: &[(String, String)]) {
    let stamp = format!("..2026_11_22_{version:02}");
    std::fs::create_dir_all(dir.join(&stamp)).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.join(&stamp).join(name), text).expect("write");
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).expect("link");
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
}

/// The pod's mounts under `root` as the kubelet lays them out: the
/// ConfigMap at `etc/switchyard` (through `..data`), the default
/// certificate's Secret at `etc/switchyard-certs`, the stats password's at
/// `etc/switchyard-stats`. The ConfigMap's files are as they are but for
/// the addresses: `listen` and `stats` for 0.0.0.0:443 and 0.0.0.0:1936,
/// and every backend server on loopback (`servers`: each cluster address
/// with the test server that stands for it), so that nothing is sent
/// anywhere else. Returns the files, to edit and publish again.
fn mount(
    root: &Path,
    pki: &Pki,
    listen: std::net::SocketAddr,
    stats: std::net::SocketAddr,
    servers: &[(&str, std::net::SocketAddr)],
) -> Vec<(String, String)> {
    let certs = root.join("etc/switchyard-certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let pem = pki.pem(&["*.apps.example.com"]);
    let split = pem.find("-----BEGIN PRIVATE KEY").expect("key in pem");
    std::fs::write(certs.join("tls.crt"), &pem[..split]).expect("crt");
    std::fs::write(certs.join("tls.key"), &pem[split..]).expect("key");
    let stats_secret = root.join("etc/switchyard-stats");
    std::fs::create_dir_all(&stats_secret).expect("stats secret dir");
    std::fs::write(stats_secret.join("password"), "pw-from-secret\n").expect("password");
    let mut files = configmap_data(&documents("docker/k8s/configmap.yaml"), "switchyard-config");
    for (name, text) in files.iter_mut() {
        *text = text
            .replace("0.0.0.0:443", &listen.to_string())
            .replace("0.0.0.0:1936", &stats.to_string());
        for (cluster, local) in servers {
            *text = text.replace(cluster, &local.to_string());
        }
        if name == "backends.toml" {
            for line in text.lines().filter(|l| l.contains("address = ")) {
                assert!(
                    line.contains("\"127."),
                    "a server left off loopback: {line}"
                );
            }
        }
    }
    publish(&root.join("etc/switchyard"), 1, &files);
    files
}

/// Loopback servers for the ConfigMap's backends: the passthrough pods
/// (TLS, `web`) and the edge route's (plain HTTP, answering `static`).
async fn configmap_servers(pki: &Pki) -> Vec<(&'static str, std::net::SocketAddr)> {
    let web = named_server("web", pki.server_config(&["www.apps.example.com"])).await;
    let plain = http_server(|_| "static\n".to_string()).await;
    vec![
        ("10.128.2.17:8443", web.addr),
        ("10.129.0.23:8443", web.addr),
        ("10.128.2.30:8080", plain),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_the_configmap_as_mounted_and_follows_a_data_swap() {
    let root = tempfile::tempdir().expect("root");
    let etc = root.path().join("etc/switchyard");
    let pki = Pki::new();
    let (listen, stats) = (closed_port(), closed_port());
    let servers = configmap_servers(&pki).await;
    let mut files = mount(root.path(), &pki, listen, stats, &servers);
    let config = etc.join("switchyard.toml");
    let (accepted, said) = check(&config);
    assert!(accepted, "{said}");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    // Killed when the test ends, also when an assertion fails first.
    let _child = KillOnDrop(child);
    let started = Instant::now();
    while tokio::net::TcpStream::connect(stats).await.is_err() {
        assert!(started.elapsed() < WAIT, "stats port up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Probes need no password; metrics need the one from the Secret.
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode("admin:pw-from-secret");
    assert_eq!(http_status(stats, "/healthz/ready", None).await, 200);
    assert_eq!(http_status(stats, "/metrics", None).await, 401);
    assert_eq!(http_status(stats, "/metrics", Some(&token)).await, 200);

    // A new route to a server on loopback, published the kubelet's way.
    let server = named_server("new-pod", pki.server_config(&["new.apps.example.com"])).await;
    for (name, text) in files.iter_mut() {
        match name.as_str() {
            "backends.toml" => text.push_str(&format!(
                "\n[[backend]]\nname = \"be_tcp:shop:new\"\nservers = [{{ name = \"new-pod\", address = \"{}\" }}]\n",
                server.addr
            )),
            "os_sni_passthrough.map" => text.push_str("^new\\.apps\\.example\\.com$ 1\n"),
            "os_tcp_be.map" => text.push_str(&format!("{} be_tcp:shop:new\n", route_regex("new.apps.example.com"))),
            _ => {}
        }
    }
    publish(&etc, 2, &files);
    let swapped = Instant::now();
    let answer = loop {
        // Until the swap is applied the name has no route: it is served in
        // HTTP mode (503 page), which never greets: give up on it quickly.
        let attempt = Open::connect(listen, "new.apps.example.com", pki.client_config());
        if let Ok(Ok(open)) = tokio::time::timeout(Duration::from_millis(500), attempt).await {
            break open.server;
        }
        assert!(
            swapped.elapsed() < WAIT,
            "the new route is served after the ..data swap"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer, "new-pod");
}

/// The status code of `GET path` on `addr`, with basic auth when given.
async fn http_status(addr: std::net::SocketAddr, path: &str, basic: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = basic.map_or(String::new(), |t| format!("Authorization: Basic {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: stats\r\n{auth}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line")
}

/// A child process killed and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The generator variant: the sidecar may list every kind it lists (and
/// nothing more than read), writes where the router reads, and the init
/// container writes the first configuration before the router starts.
#[test]
fn the_generator_sidecar_can_read_what_it_lists_and_writes_where_the_router_reads() {
    let docs = documents("docker/k8s/generated-routes.yaml");
    let role = of_kind(&docs, "ClusterRole")[0];
    let mut granted = Vec::new();
    for rule in role["rules"].as_vec().expect("rules") {
        let verbs: Vec<&str> = rule["verbs"]
            .as_vec()
            .expect("verbs")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(
            verbs.iter().all(|v| ["get", "list", "watch"].contains(v)),
            "read only: {verbs:?}"
        );
        for group in rule["apiGroups"]
            .as_vec()
            .expect("groups")
            .iter()
            .filter_map(Yaml::as_str)
        {
            for resource in rule["resources"]
                .as_vec()
                .expect("resources")
                .iter()
                .filter_map(Yaml::as_str)
            {
                granted.push(if group.is_empty() {
                    resource.to_string()
                } else {
                    format!("{resource}.{group}")
                });
            }
        }
    }
    let script = configmap_data(&docs, "switchyard-generate")
        .into_iter()
        .find(|(k, _)| k == "generate.sh")
        .expect("generate.sh")
        .1;
    let listed: Vec<&str> = script
        .split_whitespace()
        .map(|w| w.trim_end_matches(';'))
        .filter(|w| w.contains('.') && w.ends_with(".io"))
        .chain(["services", "configmaps", "secrets"])
        .collect();
    assert!(listed.len() >= 10, "{listed:?}");
    for kind in listed {
        assert!(
            granted.iter().any(|g| g == kind),
            "{kind} is listed but not granted: {granted:?}"
        );
    }
    let ds = of_kind(&docs, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["serviceAccountName"].as_str(), Some("switchyard"));
    let out = script
        .split("--out ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("--out");
    let mount_of = |container: &Yaml, volume: &str| {
        container["volumeMounts"]
            .as_vec()
            .expect("mounts")
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .and_then(|m| m["mountPath"].as_str())
            .map(str::to_string)
    };
    let router = &pod["containers"][0];
    let generator = &pod["containers"][1];
    let init = &pod["initContainers"][0];
    assert_eq!(
        mount_of(router, "config").as_deref(),
        Some(out),
        "the router reads what is generated"
    );
    assert_eq!(mount_of(generator, "config").as_deref(), Some(out));
    assert_eq!(mount_of(init, "config").as_deref(), Some(out));
    let args: Vec<&str> = router["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        args.contains(&format!("{out}/switchyard.toml").as_str()),
        "{args:?}"
    );
    let dockerfile = std::fs::read_to_string(repo("docker/Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("AS generator") && dockerfile.contains("kubernetes-client"));
}

/// The capabilities `buildah run` grants by default.
const DEFAULT_CAPS: [&str; 11] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// `buildah` with vfs storage, as `docker/image.sh` runs it.
fn buildah(args: &[&str]) -> std::process::Output {
    Command::new("buildah")
        .env("STORAGE_DRIVER", "vfs")
        .args(args)
        .output()
        .expect("buildah")
}

/// The pid and user id of the process whose command line is `argv`.
fn process_of(argv: &[&str], ancestor: u32) -> Option<(u32, u32)> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read(entry.path().join("cmdline")).ok()? != wanted || !descends(pid, ancestor) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        return Some((pid, uid));
    }
    None
}

/// Whether `pid` is `ancestor` or below it (so that only the test's own
/// router is ever signalled, never another process with its arguments).
fn descends(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..16 {
        if pid == ancestor {
            return true;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        let Some(parent) = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse().ok())
        else {
            return false;
        };
        pid = parent;
    }
    false
}

/// The image `docker/image.sh` builds, run as the DaemonSet runs it: its
/// entry point and command are the DaemonSet's, its user the pod's
/// non-root one, and it binds a port below 1024 as that user (the file
/// capability on the binary survives the image build). On the
/// ConfigMap's own configuration it answers the readiness probe, routes a
/// passthrough and an edge connection, and drains and exits 0 on SIGTERM.
/// With no_new_privs (`allowPrivilegeEscalation: false`) the kernel
/// refuses to run a binary carrying a file capability, which is why the
/// manifests allow privilege escalation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs the container image: `bash docker/image.sh` builds it and runs this"]
async fn the_image_runs_the_configmap_as_the_daemonset_says() {
    let image = std::env::var("SWITCHYARD_IMAGE").expect("SWITCHYARD_IMAGE: the image to run");
    let inspect = buildah(&["inspect", "--type", "image", &image]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect");
    let config = &inspected["OCIv1"]["config"];
    assert_eq!(config["StopSignal"], "SIGTERM");
    let daemonsets = documents("docker/k8s/daemonset.yaml");
    let ds = of_kind(&daemonsets, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    let uid = pod["securityContext"]["runAsUser"]
        .as_i64()
        .expect("runAsUser");
    assert_eq!(
        config["User"],
        format!("{uid}:{uid}"),
        "the image runs as the pod's user"
    );
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        config["Cmd"],
        serde_json::json!(args),
        "the image's command is the DaemonSet's"
    );
    assert_eq!(config["Entrypoint"], serde_json::json!(["/switchyard"]));

    let root = tempfile::tempdir().expect("root");
    let pki = Pki::new();
    // A port below 1024, on a loopback address of its own.
    let listen: std::net::SocketAddr = "127.0.0.7:443".parse().expect("addr");
    let stats = closed_port();
    let servers = configmap_servers(&pki).await;
    mount(root.path(), &pki, listen, stats, &servers);
    let from = buildah(&["from", "--pull-never", &image]);
    assert!(
        from.status.success(),
        "{}",
        String::from_utf8_lossy(&from.stderr)
    );
    let container = String::from_utf8_lossy(&from.stdout).trim().to_string();
    let run = |no_new_privs: bool, drop_all: bool| {
        let mut command = if no_new_privs {
            let mut c = Command::new("setpriv");
            c.args(["--no-new-privs", "buildah"]);
            c
        } else {
            Command::new("buildah")
        };
        command.env("STORAGE_DRIVER", "vfs").args([
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
        ]);
        // The manifests' bounding set: buildah's defaults dropped but
        // NET_BIND_SERVICE (or, to show why it stays, all of them).
        let keep_bind = !drop_all;
        for cap in DEFAULT_CAPS
            .iter()
            .filter(|c| !keep_bind || **c != "CAP_NET_BIND_SERVICE")
        {
            command.args(["--cap-drop", cap]);
        }
        for dir in ["switchyard", "switchyard-certs", "switchyard-stats"] {
            let host = root.path().join("etc").join(dir);
            command
                .arg("-v")
                .arg(format!("{}:/etc/{dir}:ro", host.display()));
        }
        command
            .arg(&container)
            .arg("--")
            .arg("/switchyard")
            .args(&args);
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("buildah run")
    };

    // Without the privilege to gain the capability (no_new_privs), or
    // without it in the bounding set, the router never binds 443: the
    // bind is refused, or the kernel refuses to run the binary at all.
    for (no_new_privs, drop_all) in [(true, false), (false, true)] {
        let refused = run(no_new_privs, drop_all).wait_with_output().expect("run");
        let said = String::from_utf8_lossy(&refused.stderr);
        let denied = said.contains("not permitted") || said.contains("Permission denied");
        assert!(!refused.status.success() && denied, "{said}");
    }

    let argv: Vec<&str> = std::iter::once("/switchyard")
        .chain(args.iter().copied())
        .collect();
    let mut router = Contained {
        run: run(false, false),
        argv: argv.iter().map(|a| a.to_string()).collect(),
    };
    let started = Instant::now();
    while http_status_or_none(stats).await != Some(200) {
        if let Some(status) = router.run.try_wait().expect("wait") {
            let mut said = String::new();
            if let Some(mut stderr) = router.run.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
            }
            panic!("the router in the image stopped ({status}): {said}");
        }
        assert!(started.elapsed() < WAIT * 3, "the readiness probe answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (pid, user) = process_of(&argv, router.run.id()).expect("the router's process");
    assert_eq!(i64::from(user), uid, "the router runs as the non-root user");
    let web = Open::connect(listen, "www.apps.example.com", pki.client_config())
        .await
        .expect("passthrough");
    assert_eq!(web.server, "web");
    drop(web);
    let edge = https_get(listen, &pki, "static.apps.example.com").await;
    assert!(
        edge.starts_with("HTTP/1.1 200") && edge.ends_with("static\n"),
        "edge: {edge}"
    );

    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = router.run.try_wait().expect("wait") {
            break status;
        }
        assert!(stopped.elapsed() < WAIT, "SIGTERM drains and exits");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit 0 after SIGTERM: {status}");
    let _ = buildah(&["rm", &container]);
}

/// `buildah run` and the router it started: when dropped (the test done,
/// or failed first), the router is killed too, since it outlives a killed
/// `buildah run`.
struct Contained {
    run: std::process::Child,
    argv: Vec<String>,
}

impl Drop for Contained {
    fn drop(&mut self) {
        let argv: Vec<&str> = self.argv.iter().map(String::as_str).collect();
        if let Some((pid, _)) = process_of(&argv, self.run.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.run.kill();
        let _ = self.run.wait();
    }
}

/// The readiness probe's status, if the stats port answers.
async fn http_status_or_none(stats: std::net::SocketAddr) -> Option<u16> {
    tokio::net::TcpStream::connect(stats).await.ok()?;
    Some(http_status(stats, "/healthz/ready", None).await)
}

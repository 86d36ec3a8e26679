//! The configuration directory from admitted claims: the map files as the
//! reference writes them (its route regexes, its line order), the
//! backends, the certificates, and a `switchyard.toml` that names them.
//! Then [`publish`] swaps it in atomically, as a ConfigMap volume does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use super::routes::{Claim, Index, Insecure, Pem};
use super::servers::servers;
use super::settings::quoted;
use super::settings::Termination;
use super::{Options, Report};

/// Files by name, with whether they are private (mode 0600).
pub type Files = BTreeMap<String, (Vec<u8>, bool)>;

/// `regexp.QuoteMeta` as the reference applies it to hosts and paths.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push('\\');
                out.push(c);
            }
            // Map lines split at whitespace: a space is written as a code.
            ' ' => out.push_str("\\x20"),
            c => out.push(c),
        }
    }
    out
}

/// The host part of a route regex: the name; for a wildcard, one label
/// before the domain (a Gateway wildcard: one label or more; every name
/// when it has no domain).
fn host_pattern(claim: &Claim) -> String {
    match (claim.wildcard, claim.deep, claim.host.is_empty()) {
        (false, _, _) => quote(&claim.host),
        (true, false, _) => format!("[^\\.]*\\.{}", quote(&claim.host)),
        // Labels only: never across the `:port` or the path of the key.
        (true, true, false) => format!("(?:[^./:]+\\.)+{}", quote(&claim.host)),
        (true, true, true) => "[^/:]+".to_string(),
    }
}

/// Where a claim's lines sort in a map: exact hosts, then one-label
/// wildcards, then deeper ones (those of longer domains first: the most
/// specific hostname wins, as the Gateway API says), then the line for
/// every name.
fn rank(claim: &Claim) -> u16 {
    match (claim.wildcard, claim.deep, claim.host.is_empty()) {
        (false, _, _) => 0,
        (true, false, _) => 0x100,
        (true, true, false) => {
            let labels = claim.host.split('.').count().min(0xff) as u16;
            0x200 + (0xff - labels)
        }
        (true, true, true) => 0x300,
    }
}

/// The route regex: `^<host>\.?(:[0-9]+)?<path>(/.*)?$`; a path ending
/// in `/` takes `(.*)?`, a root path none, an exact path nothing after it.
pub(crate) fn route_regex(claim: &Claim, with_path: bool) -> String {
    let path = if with_path { claim.path.as_str() } else { "" };
    let (path, rest) = if claim.exact && !path.is_empty() {
        (quote(path), "")
    } else if path.trim_end_matches('/').is_empty() {
        (String::new(), "(/.*)?")
    } else if path.ends_with('/') {
        (quote(path), "(.*)?")
    } else {
        (quote(path), "(/.*)?")
    };
    format!("^{}\\.?(:[0-9]+)?{path}{rest}$", host_pattern(claim))
}

/// A map file's lines in the reference's order: reverse lexical (a longer
/// path before its prefix), wildcard lines after the others. An exact
/// path's line (`…/p$`) goes before the prefix line of the same path
/// (`…/p(/.*)?$`), which would otherwise match first and hide it.
fn map_file(title: &str, lines: Vec<(u16, String)>) -> Vec<u8> {
    let mut lines = lines;
    let key = |line: &str| {
        let regex = line.split(' ').next().unwrap_or(line);
        match regex.strip_suffix('$') {
            Some(body) if !body.ends_with(")?") => format!("{body}\u{7f}"),
            _ => regex.to_string(),
        }
    };
    lines.sort_by(|(wa, a), (wb, b)| {
        wa.cmp(wb)
            .then_with(|| key(b).cmp(&key(a)))
            .then_with(|| b.cmp(a))
    });
    lines.dedup();
    let mut out =
        format!("# {title}\n# Written by `switchyard generate`: edits are overwritten.\n");
    for (_, line) in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out.into_bytes()
}

fn pem_bytes(pem: &Pem) -> Vec<u8> {
    format!("{}{}", pem.chain, pem.key).into_bytes()
}

/// The directory's files for `claims`.
pub(crate) fn files(
    claims: &[Claim],
    index: &Index<'_>,
    options: &Options,
    report: &mut Report,
) -> Files {
    let mut files = Files::new();
    let mut maps = Maps::default();
    for claim in claims {
        maps.add(claim, options, &mut files);
    }
    maps.write(&mut files);
    let backends = backends(claims, index, options, &mut files, report);
    files.insert("backends.toml".into(), (backends.into_bytes(), false));
    if let Some(default) = &options.default_certificate {
        files.insert("default.pem".into(), (default.clone(), true));
    }
    if !options.maps_only {
        files.insert(
            "switchyard.toml".into(),
            (main_file(options).into_bytes(), false),
        );
    }
    files
}

/// The lines of each map file, each with its claim's [`rank`] (the sort
/// puts exact hosts first).
#[derive(Default)]
struct Maps {
    sni: Vec<(u16, String)>,
    tcp: Vec<(u16, String)>,
    edge: Vec<(u16, String)>,
    http: Vec<(u16, String)>,
    redirect: Vec<(u16, String)>,
    certs: Vec<(u16, String)>,
}

impl Maps {
    /// The lines of one claim, and its certificate's file.
    fn add(&mut self, claim: &Claim, options: &Options, files: &mut Files) {
        let w = rank(claim);
        let full = route_regex(claim, true);
        // Every route has its line in the redirect map, `1` to redirect
        // port 80 to https and `0` not to, sorted like the others: a more
        // specific path that does not redirect (Allow, plain HTTP) under a
        // host whose `/` route redirects is served, as by the reference.
        let redirect = claim.insecure == Insecure::Redirect && !claim.gateway_http;
        self.redirect
            .push((w, format!("{full} {}", if redirect { 1 } else { 0 })));
        if claim.gateway_http {
            // A Gateway HTTP listener's route: port 80 only, whatever the
            // termination toward its servers.
            self.http.push((w, format!("{full} {}", claim.backend)));
            return;
        }
        match claim.termination {
            Termination::Passthrough => {
                let exact = format!("^{}$", host_pattern(claim));
                self.sni.push((w, format!("{exact} 1")));
                let line = format!("{} {}", route_regex(claim, false), claim.backend);
                self.tcp.push((w, line));
            }
            Termination::Edge | Termination::Reencrypt => {
                self.edge.push((w, format!("{full} {}", claim.backend)));
                // A route for every name has no SNI filter: the default
                // certificate serves it.
                if let Some(pem) = claim
                    .certificate
                    .as_ref()
                    .filter(|_| !claim.host.is_empty())
                {
                    // Named from the configuration's directory, or from the
                    // output directory for a hand-written TOML elsewhere.
                    let path = if options.maps_only {
                        options.out.join(&pem.file).display().to_string()
                    } else {
                        pem.file.clone()
                    };
                    self.certs
                        .push((w, format!("{path} {}", claim.sni_filter())));
                    files.insert(pem.file.clone(), (pem_bytes(pem), true));
                }
            }
            Termination::Plain => self.http.push((w, format!("{full} {}", claim.backend))),
        }
        if claim.termination != Termination::Plain && claim.insecure == Insecure::Allow {
            self.http.push((w, format!("{full} {}", claim.backend)));
        }
    }

    /// The map files, sorted as the reference sorts them.
    fn write(self, files: &mut Files) {
        let maps = [
            (
                "os_sni_passthrough.map",
                "SNIs served by passthrough.",
                self.sni,
            ),
            ("os_tcp_be.map", "SNI -> passthrough backend.", self.tcp),
            (
                "os_edge_reencrypt_be.map",
                "Host and path -> edge or re-encrypt backend.",
                self.edge,
            ),
            (
                "os_http_be.map",
                "Host and path on port 80 -> backend.",
                self.http,
            ),
            (
                "os_route_http_redirect.map",
                "Host and path on port 80 -> 1: redirect to https, 0: do not.",
                self.redirect,
            ),
            (
                "cert_config.map",
                "Certificates by SNI (crt-list).",
                self.certs,
            ),
        ];
        for (name, what, lines) in maps {
            files.insert(name.into(), (map_file(what, lines), false));
        }
    }
}

/// `backends.toml`: one backend per name, in name order.
fn backends(
    claims: &[Claim],
    index: &Index<'_>,
    options: &Options,
    files: &mut Files,
    report: &mut Report,
) -> String {
    let mut by_name: BTreeMap<&str, &Claim> = BTreeMap::new();
    for claim in claims {
        by_name.entry(claim.backend.as_str()).or_insert(claim);
    }
    let mut out = String::from("# Written by `switchyard generate`: edits are overwritten.\n");
    for (name, claim) in by_name {
        let (servers, notes) = servers(index, &claim.targets);
        for note in notes {
            report.note(&claim.owner, note);
        }
        let termination = match claim.termination {
            Termination::Passthrough => "passthrough",
            Termination::Edge => "edge",
            Termination::Reencrypt => "reencrypt",
            Termination::Plain => "none",
        };
        let _ = write!(
            out,
            "\n[[backend]]\nname = {}\ntermination = \"{termination}\"\n",
            quoted(name)
        );
        let has_balance = claim.settings.keys.iter().any(|(k, _)| *k == "balance");
        if claim.targets.len() > 1 && !has_balance {
            // Several weighted services: roundrobin, as the reference.
            out.push_str("balance = \"roundrobin\"\n");
        }
        for (key, value) in &claim.settings.keys {
            let _ = writeln!(out, "{key} = {value}");
        }
        if claim.termination == Termination::Reencrypt {
            reencrypt(claim, options, files, report, &mut out);
        }
        if let Some(interval) = &claim.settings.check_interval {
            let _ = writeln!(out, "check = {{ kind = \"tcp\", interval = {interval} }}");
        }
        out.push_str("servers = [");
        for (i, s) in servers.iter().enumerate() {
            let _ = write!(
                out,
                "{}\n  {{ name = {}, address = {}, weight = {} }}",
                if i == 0 { "" } else { "," },
                quoted(&s.name),
                quoted(&s.address),
                s.weight
            );
        }
        out.push_str(if servers.is_empty() { "]\n" } else { ",\n]\n" });
    }
    out
}

/// A re-encrypt backend's lines: the name verified and the CA (the
/// route's own, else the service CA); with neither, `verify = "none"` as
/// the reference's template writes it, said loudly.
fn reencrypt(
    claim: &Claim,
    options: &Options,
    files: &mut Files,
    report: &mut Report,
    out: &mut String,
) {
    if let Some(host) = &claim.verify_host {
        let _ = writeln!(out, "verify_host = {}", quoted(host));
    }
    let ca = match &claim.destination_ca {
        Some(pem) => {
            files.insert(pem.file.clone(), (pem_bytes(pem), false));
            Some(if options.maps_only {
                options.out.join(&pem.file).display().to_string()
            } else {
                pem.file.clone()
            })
        }
        None => options.service_ca.as_ref().map(|p| p.display().to_string()),
    };
    match ca {
        Some(ca) => {
            let _ = writeln!(out, "ca_file = {}", quoted(&ca));
        }
        None => {
            out.push_str("verify = \"none\"\n");
            report.note(&claim.owner, "UNVERIFIED: no destinationCACertificate and no --service-ca: its servers' certificates are not verified (verify none, as the reference does)".into());
        }
    }
}

/// `switchyard.toml`: the listeners, the maps and the backends file.
pub(crate) fn main_file(options: &Options) -> String {
    let mut out = String::from(
        "# Written by `switchyard generate`: edits are overwritten.\nbackend_files = [\"backends.toml\"]\n",
    );
    let _ = write!(
        out,
        "\n[[listener]]\nname = \"public_ssl\"\nbind = {}\n\n[[listener]]\nname = \"public\"\nbind = {}\nprotocol = \"http\"\nhttps_port = {}\n",
        quoted(&options.https_bind),
        quoted(&options.http_bind),
        options.https_port
    );
    out.push_str(
        "\n[maps]\nsni_passthrough = \"os_sni_passthrough.map\"\ntcp_be = \"os_tcp_be.map\"\n\
         edge_reencrypt_be = \"os_edge_reencrypt_be.map\"\ncert_config = \"cert_config.map\"\n\
         http_be = \"os_http_be.map\"\nhttp_redirect = \"os_route_http_redirect.map\"\n",
    );
    if options.default_certificate.is_some() {
        out.push_str("\n[tls]\ndefault_certificate = \"default.pem\"\n");
    }
    let _ = write!(out, "\n[stats]\nbind = {}\n", quoted(&options.stats_bind));
    if let Some(file) = &options.stats_password_file {
        let _ = write!(
            out,
            "user = \"admin\"\npassword_file = {}\n",
            quoted(&file.display().to_string())
        );
    }
    out
}

/// Replaces the contents of `out` atomically: the files are written to a
/// new directory named after their digest, `..data` is pointed at it with
/// one rename, and each name in `out` is a symlink through `..data` (a
/// ConfigMap volume's layout, which the router's watcher follows). The
/// same files twice change nothing. Returns whether anything changed.
pub fn publish(out: &Path, files: &Files) -> io::Result<bool> {
    use std::os::unix::fs::{symlink, OpenOptionsExt};
    std::fs::create_dir_all(out)?;
    let version = format!("..{}", version_of(files));
    let data = out.join("..data");
    if std::fs::read_link(&data).is_ok_and(|target| target == Path::new(&version)) {
        return Ok(false);
    }
    link_names(out, files)?;
    let dir = out.join(&version);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir(&dir)?;
    for (name, (bytes, private)) in files {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if *private { 0o600 } else { 0o644 })
            .open(dir.join(name))?;
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
    }
    let staged = out.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    symlink(&version, &staged)?;
    std::fs::rename(&staged, &data)?;
    remove_stale(out, files, &version)?;
    Ok(true)
}

/// The first 8 bytes of a SHA-256 over every name, content and mode, in
/// hex: the same files give the same version.
fn version_of(files: &Files) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (name, (bytes, private)) in files {
        ctx.update(&(name.len() as u64).to_le_bytes());
        ctx.update(name.as_bytes());
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(bytes);
        ctx.update(&[u8::from(*private)]);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .take(8)
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Every name through `..data`, made before the swap so that the files
/// the new version names are there when it appears; a name held by
/// anything else is refused before anything changed.
fn link_names(out: &Path, files: &Files) -> io::Result<()> {
    for name in files.keys() {
        let link = out.join(name);
        let through = Path::new("..data").join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() && std::fs::read_link(&link)? == through => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a link to {}: not overwritten",
                    link.display(),
                    through.display()
                )))
            }
            Err(_) => std::os::unix::fs::symlink(&through, &link)?,
        }
    }
    Ok(())
}

/// After the swap: names no longer written are removed, and older versions.
fn remove_stale(out: &Path, files: &Files, version: &str) -> io::Result<()> {
    for entry in std::fs::read_dir(out)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let is_link = entry.file_type()?.is_symlink();
        if name.starts_with("..")
            && name != "..data"
            && name != version
            && entry.file_type()?.is_dir()
        {
            std::fs::remove_dir_all(entry.path())?;
        } else if is_link && !name.starts_with("..") && !files.contains_key(&name) {
            let target = std::fs::read_link(entry.path())?;
            if target.starts_with("..data") {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(host: &str, wildcard: bool, path: &str, exact: bool) -> Claim {
        Claim {
            wildcard,
            path: path.into(),
            exact,
            ..Claim::plain("ns", "r", host)
        }
    }

    #[test]
    fn route_regexes_are_the_references() {
        let r = |h, w, p, e| route_regex(&claim(h, w, p, e), true);
        assert_eq!(
            r("www.example.com", false, "", false),
            r"^www\.example\.com\.?(:[0-9]+)?(/.*)?$"
        );
        assert_eq!(
            r("www.example.com", false, "/", false),
            r"^www\.example\.com\.?(:[0-9]+)?(/.*)?$"
        );
        assert_eq!(
            r("a.test", false, "/x/y", false),
            r"^a\.test\.?(:[0-9]+)?/x/y(/.*)?$"
        );
        assert_eq!(
            r("a.test", false, "/x/", false),
            r"^a\.test\.?(:[0-9]+)?/x/(.*)?$"
        );
        assert_eq!(
            r("wild.test", true, "", false),
            r"^[^\.]*\.wild\.test\.?(:[0-9]+)?(/.*)?$"
        );
        assert_eq!(
            r("a.test", false, "/my docs", false),
            r"^a\.test\.?(:[0-9]+)?/my\x20docs(/.*)?$"
        );
        assert_eq!(
            r("a.test", false, "/v1.0", true),
            r"^a\.test\.?(:[0-9]+)?/v1\.0$"
        );
        for regex in [
            r("a.test", false, "/my docs(1)", false),
            r("w.test", true, "/a+b", false),
        ] {
            regex::Regex::new(&regex).expect("a valid regex");
        }
    }

    /// A Gateway wildcard matches one label or more, never across the
    /// port or into the path; the longer domain sorts first.
    #[test]
    fn gateway_wildcards_match_labels_only_and_the_narrower_first() {
        let mut deep = claim("example.test", true, "", false);
        deep.deep = true;
        let regex = regex::Regex::new(&route_regex(&deep, true)).expect("regex");
        assert!(regex.is_match("a.example.test/x"));
        assert!(regex.is_match("a.b.example.test:8080/x"));
        assert!(!regex.is_match("example.test/x"));
        assert!(!regex.is_match("victim.test/a.example.test/x"));
        assert!(!regex.is_match("victim.test:1.example.test/x"));
        let mut narrower = claim("a.example.test", true, "", false);
        narrower.deep = true;
        assert!(rank(&narrower) < rank(&deep));
        let mut every = claim("", true, "", false);
        every.deep = true;
        assert!(
            rank(&deep) < rank(&every) && rank(&claim("x.test", true, "", false)) < rank(&deep)
        );
    }

    #[test]
    fn lines_sort_longer_paths_first_and_wildcards_last() {
        let text = map_file(
            "t",
            vec![
                (0x100, "^[^\\.]*\\.w\\.test x".into()),
                (0, "^a\\.test\\.?(:[0-9]+)?(/.*)?$ x".into()),
                (0, "^a\\.test\\.?(:[0-9]+)?/x(/.*)?$ x".into()),
                (0, "^b\\.test\\.?(:[0-9]+)?(/.*)?$ x".into()),
            ],
        );
        let text = String::from_utf8(text).expect("utf-8");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines[0].starts_with("^b"), "{lines:?}");
        assert!(
            lines[1].contains("/x(/"),
            "the longer path first: {lines:?}"
        );
        assert!(lines[3].starts_with("^[^"), "wildcards last: {lines:?}");
    }

    #[test]
    fn publishing_swaps_atomically_and_twice_is_a_no_op() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("config");
        let mut files = Files::new();
        files.insert("a.map".into(), (b"one\n".to_vec(), false));
        files.insert("key.pem".into(), (b"secret\n".to_vec(), true));
        assert!(publish(&out, &files).expect("first"));
        assert!(
            !publish(&out, &files).expect("same again"),
            "nothing changed"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        files.insert("a.map".into(), (b"two\n".to_vec(), false));
        files.remove("key.pem");
        assert!(publish(&out, &files).expect("second"));
        assert_eq!(std::fs::read(out.join("a.map")).expect("read"), b"two\n");
        assert!(
            !out.join("key.pem").exists(),
            "a name no longer written goes"
        );
        let versions = std::fs::read_dir(&out)
            .expect("list")
            .filter(|e| {
                e.as_ref().is_ok_and(|e| {
                    e.file_name().to_string_lossy().starts_with("..")
                        && e.file_type().is_ok_and(|t| t.is_dir())
                })
            })
            .count();
        assert_eq!(versions, 1, "the old version is removed");
    }

    #[test]
    fn a_name_held_by_another_file_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("config");
        let mut files = Files::new();
        files.insert("a.map".into(), (b"one\n".to_vec(), false));
        publish(&out, &files).expect("first");
        std::fs::write(out.join("b.map"), "hand-written\n").expect("write");
        files.insert("a.map".into(), (b"two\n".to_vec(), false));
        files.insert("b.map".into(), (b"generated\n".to_vec(), false));
        let err = publish(&out, &files).expect_err("b.map is not ours");
        assert!(err.to_string().contains("b.map"), "{err}");
        assert_eq!(
            std::fs::read(out.join("a.map")).expect("read"),
            b"one\n",
            "unchanged"
        );
        assert_eq!(
            std::fs::read(out.join("b.map")).expect("read"),
            b"hand-written\n"
        );
    }
}

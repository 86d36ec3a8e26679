//! The `switchyard` command: serve a configuration, check one, explain a
//! routing decision, or run the self-contained demo.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use switchyard::config::{self, Loaded};
use switchyard::logging::{self, Format};
use switchyard::{demo, explain, reload, Router};

/// mimalloc instead of the system allocator: HTTP mode allocates per
/// request (headers, frames, tasks), and glibc's malloc and free cost
/// about a tenth of the proxy's CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SNI-routing TCP/TLS ingress router. Reads the SNI of each TLS connection
/// without decrypting it, finds the route in HAProxy-style map files and
/// relays the connection to a server of the backend.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, global = true, default_value = "text")]
    log_format: Format,
    /// Worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configuration until SIGTERM or SIGINT, then drain.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// How long open connections may take to finish after a stop signal.
        #[arg(long, default_value = "30", value_name = "SECONDS")]
        drain: u64,
    },
    /// Load and validate everything the configuration names; print each
    /// problem as file:line: message. Exit 1 if there is any.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Explain where a connection with this SNI would go.
    Route {
        #[arg(long, short)]
        config: PathBuf,
        /// The server name, as a client would send it.
        sni: String,
        /// Client address, for the server choice.
        #[arg(long, default_value = "192.0.2.1")]
        client: IpAddr,
        /// The listener the connection arrives on (its default backend
        /// applies when no map line matches); default: the first one.
        #[arg(long)]
        listener: Option<String>,
        /// In HTTP mode: the request's path (the name is then its Host).
        #[arg(long)]
        path: Option<String>,
        /// ALPN protocols the client offers, in its order (`h2,http/1.1`;
        /// `acme-tls/1`), for the `alpn_be` map.
        #[arg(long, value_delimiter = ',')]
        alpn: Vec<String>,
    },
    /// Start demo TLS servers and a router in front of them, with a
    /// configuration written to a directory you can edit.
    Demo {
        /// Directory for the demo's configuration (default: a new temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Address the demo router listens on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Address of the demo's plain-HTTP listener (redirects, insecure routes).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_listen: SocketAddr,
    },
    /// Write a configuration directory from Kubernetes objects (Routes,
    /// Ingresses, Gateway API routes, Services, EndpointSlices, Secrets)
    /// as `kubectl get … -o yaml|json` prints them. The directory is
    /// replaced atomically; problems name the object and field. Exit 1 if
    /// any object was skipped, 2 if nothing could be written.
    Generate {
        /// Files or directories of objects; `-` for standard input.
        #[arg(long = "from", required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        /// The configuration directory to write (a `..data` symlink swap).
        #[arg(long)]
        out: PathBuf,
        /// PEM (chain and key) served when no route's certificate matches.
        #[arg(long)]
        default_certificate: Option<PathBuf>,
        /// Only maps, backends.toml and certificates, for a hand-written TOML.
        #[arg(long)]
        maps_only: bool,
        /// Only Ingresses of this class (`spec.ingressClassName`).
        #[arg(long)]
        ingress_class: Option<String>,
        /// CA for re-encrypt routes without a destinationCACertificate
        /// (default: the cluster's service CA, when the pod has it).
        #[arg(long)]
        service_ca: Option<PathBuf>,
        /// The generated TLS listener's address.
        #[arg(long, default_value = "0.0.0.0:443")]
        https_bind: String,
        /// The generated plain-HTTP listener's address.
        #[arg(long, default_value = "0.0.0.0:80")]
        http_bind: String,
        /// The port named in redirects to https.
        #[arg(long, default_value = "443")]
        https_port: u16,
        /// The generated stats port's address.
        #[arg(long, default_value = "0.0.0.0:1936")]
        stats_bind: String,
        /// Protect /metrics and /stats with user `admin` and the password
        /// in this file (a mounted Secret); without it, stats listen on
        /// loopback only.
        #[arg(long)]
        stats_password_file: Option<PathBuf>,
        /// Let routes of different namespaces share a host (different
        /// paths) and take names under each other's wildcards, as the
        /// reference's ROUTER_DISABLE_NAMESPACE_OWNERSHIP_CHECK does. Only
        /// for clusters whose namespaces trust each other.
        #[arg(long)]
        disable_namespace_ownership_check: bool,
    },
}

/// `eprintln!` after the log lines that wait to be written, so that the
/// two come out in the order they happened.
macro_rules! say {
    ($($arg:tt)*) => {{
        logging::flush();
        eprintln!($($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let code = dispatch(cli);
    logging::flush();
    code
}

fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Generate {
            from,
            out,
            default_certificate,
            maps_only,
            ingress_class,
            service_ca,
            https_bind,
            http_bind,
            https_port,
            stats_bind,
            stats_password_file,
            disable_namespace_ownership_check,
        } => {
            let default_certificate = match default_certificate.map(std::fs::read).transpose() {
                Ok(pem) => pem,
                Err(e) => {
                    say!("--default-certificate: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut options = switchyard::generate::Options {
                out,
                default_certificate,
                maps_only,
                ingress_class,
                service_ca: service_ca.or_else(|| {
                    let cluster = PathBuf::from(SERVICE_CA);
                    cluster.exists().then_some(cluster)
                }),
                https_bind,
                http_bind,
                https_port,
                stats_bind,
                stats_password_file,
                namespace_ownership: !disable_namespace_ownership_check,
            };
            let stats = switchyard::generate::protect_stats(&mut options);
            generate(&from, &options, &stats)
        }
        Command::Route {
            config,
            sni,
            client,
            listener,
            path,
            alpn,
        } => route(
            &config,
            &sni,
            &alpn,
            client,
            listener.as_deref(),
            path.as_deref(),
        ),
        Command::Run { config, drain } => serve(
            cli.threads,
            || async { Ok((config, None)) },
            Duration::from_secs(drain),
        ),
        Command::Demo {
            dir,
            listen,
            http_listen,
        } => serve(
            cli.threads,
            || async move {
                let demo = demo::prepare(dir, listen, http_listen).await?;
                let banner = demo::instructions(&demo, listen, http_listen);
                Ok((demo.config, Some(banner)))
            },
            Duration::from_secs(1),
        ),
    }
}

/// Where a pod finds the cluster's service CA.
const SERVICE_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/service-ca.crt";

/// `switchyard generate`: read, generate, print the problems and the
/// routes' status, check with the loader, publish.
fn generate(from: &[PathBuf], options: &switchyard::generate::Options, stats: &str) -> ExitCode {
    use switchyard::generate;
    let mut report = generate::Report::default();
    let objects = match generate::read_inputs(from, &mut report) {
        Ok(objects) => objects,
        Err(e) => {
            say!("{e}");
            return ExitCode::from(2);
        }
    };
    let (files, generated) = generate::generate(&objects, options);
    let generated_served = generated.served;
    report.problems.extend(generated.problems);
    for problem in &report.problems {
        say!("{problem}");
    }
    let class = options.ingress_class.as_deref();
    let statuses = generate::status::statuses(&objects, class, &generated_served, &report);
    logging::flush();
    eprint!("{}", generate::status::table(&statuses));
    say!("{stats}");
    if let Err(problems) = generate::check::loads(&files, options) {
        for p in problems {
            say!("refused by the loader: {p}");
        }
        say!(
            "{}: not published: the router would refuse it",
            options.out.display()
        );
        return ExitCode::from(2);
    }
    match generate::write::publish(&options.out, &files) {
        Ok(changed) => say!(
            "{}: {} objects read, {} files {}",
            options.out.display(),
            objects.len(),
            files.len(),
            if changed { "written" } else { "unchanged" }
        ),
        Err(e) => {
            say!("{}: {e}", options.out.display());
            return ExitCode::from(2);
        }
    }
    if report.anything_skipped() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Loads a configuration, printing warnings; prints every problem and
/// returns `None` if it does not load.
fn load(path: &Path) -> Option<Loaded> {
    match config::load(path) {
        Ok(loaded) => {
            print_warnings(&loaded.warnings);
            Some(loaded)
        }
        Err(problems) => {
            for p in &problems.errors {
                say!("{p}");
            }
            print_warnings(&problems.warnings);
            say!(
                "{}: refused: {} errors",
                path.display(),
                problems.errors.len()
            );
            None
        }
    }
}

fn print_warnings(warnings: &[config::Problem]) {
    for w in warnings {
        say!("{}: warning: {}", w.location(), w.message);
    }
}

fn check(path: &Path) -> ExitCode {
    // As `run` will size them, after raising its soft limit to this.
    switchyard::config::size_to_open_files(switchyard::descriptors::hard());
    match load(path) {
        Some(loaded) => {
            if let Some(note) = loaded.snapshot.sized_note() {
                println!("{}: {note}", path.display());
            }
            let needed = switchyard::descriptors::needed(&loaded.snapshot);
            if let Some(warning) =
                switchyard::descriptors::shortfall(needed, switchyard::descriptors::hard())
            {
                say!("{}: warning: {warning}", path.display());
            }
            println!("{}: ok: {}", path.display(), loaded.snapshot.summary());
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

fn route(
    path: &Path,
    sni: &str,
    alpn: &[String],
    client: IpAddr,
    listener: Option<&str>,
    request_path: Option<&str>,
) -> ExitCode {
    let Some(loaded) = load(path) else {
        return ExitCode::FAILURE;
    };
    let (found, text) =
        explain::explain(&loaded.snapshot, listener, sni, alpn, request_path, client);
    print!("{text}");
    if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Builds the runtime, gets the configuration path from `prepare` (which
/// may start demo servers on the runtime, and gives a banner to print once
/// the listeners are bound), serves it and drains on a signal.
fn serve<F, Fut>(threads: Option<usize>, prepare: F, drain: Duration) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(PathBuf, Option<String>)>>,
{
    // One thread: a current-thread runtime, without the work-stealing
    // scheduler's bookkeeping (the usual setup beside `nbthread 1` peers).
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = threads.filter(|&n| n > 1) {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let unlimited = |l: Option<u64>| l.map_or("unlimited".to_string(), |l| l.to_string());
        match switchyard::descriptors::raise() {
            Ok(r) if r.before != r.now => tracing::info!(
                "open files: soft limit raised from {} to {}",
                unlimited(r.before),
                unlimited(r.now)
            ),
            Ok(r) => tracing::info!("open files: limit {}", unlimited(r.now)),
            Err(e) => tracing::warn!("open files: cannot raise the soft limit: {e}"),
        }
        switchyard::config::size_to_open_files(switchyard::descriptors::current());
        let (path, banner) = match prepare().await {
            Ok(p) => p,
            Err(e) => {
                say!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let Some(loaded) = load(&path) else {
            return ExitCode::FAILURE;
        };
        tracing::info!(config = %path.display(), "{}", loaded.snapshot.summary());
        if let Some(note) = loaded.snapshot.sized_note() {
            tracing::info!("{note}");
        }
        let needed = switchyard::descriptors::needed(&loaded.snapshot);
        if let Some(warning) =
            switchyard::descriptors::shortfall(needed, switchyard::descriptors::current())
        {
            tracing::warn!("{warning}");
        }
        let router = match Router::start(loaded.snapshot) {
            Ok(r) => r,
            Err(e) => {
                say!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(banner) = banner {
            say!("{banner}");
        }
        let reloader = reload::spawn(path, std::sync::Arc::clone(&router), loaded.memo);
        start_stats(&router, &reloader).await;
        wait_for_stop(&reloader).await;
        tracing::info!(
            open = router.open_connections(),
            "stopping: no new connections, draining"
        );
        let left = router.shutdown(drain).await;
        if left > 0 {
            tracing::warn!(
                left,
                "drain deadline reached; closing the remaining connections"
            );
        }
        ExitCode::SUCCESS
    })
}

/// Starts the stats port of the current configuration. A port that cannot
/// be bound is logged and left off: traffic is served regardless.
async fn start_stats(router: &std::sync::Arc<Router>, reloader: &reload::Reloader) {
    let config = router.snapshot().stats.clone();
    let Some(bind) = config.bind else { return };
    match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => {
            tracing::info!(addr = %bind, "stats port: /stats /metrics /healthz /healthz/ready");
            let task = switchyard::serve_stats(
                listener,
                std::sync::Arc::clone(router),
                std::sync::Arc::clone(&reloader.status),
                config,
            );
            tokio::spawn(task);
        }
        Err(e) => {
            tracing::error!(addr = %bind, "stats port unavailable: {e}; serving traffic without it")
        }
    }
}

/// Returns on SIGTERM or SIGINT; SIGHUP asks the reloader for a reload.
async fn wait_for_stop(reloader: &reload::Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = tokio::signal::ctrl_c() => return,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        reloader.request();
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = reloader;
    let _ = tokio::signal::ctrl_c().await;
}

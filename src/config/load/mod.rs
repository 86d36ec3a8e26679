//! Reads and validates a configuration. Every check that can fail names the
//! file and line; all problems are collected before giving up, so `check`
//! shows the whole list at once. The main file is read here (`Context::load`);
//! `backends`, `maps` and `listeners` read their parts, and `carried` keeps
//! what a reload takes over from the configuration it replaces.

mod backends;
mod carried;
mod listeners;
mod maps;
#[cfg(test)]
mod tests;

pub(super) use crate::config::raw;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::config::problem::{Problem, Problems, Source};
use crate::config::raw::RawConfig;
use crate::model::duration;
use crate::model::snapshot::{HttpSettings, Snapshot};

use self::carried::{kind_of, BackendKind, BackendMemo, Carried, MapMemo};
pub use self::listeners::size_to_open_files;

/// A configuration that loaded, with the warnings worth showing and what
/// it was built from.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<Problem>,
    /// Kept by whoever reloads, beside the snapshot once it is applied:
    /// [`reload`] reuses what did not change since.
    pub memo: Memo,
}

/// What a loaded snapshot was built from: the digest of the text each
/// compiled map and the backends came from. It belongs to the loader, not
/// to the snapshot: the data path never reads it.
#[derive(Debug, Default)]
pub struct Memo {
    /// The `load_id` of the snapshot it describes.
    built: u64,
    maps: MapMemo,
    backends: Option<Arc<BackendMemo>>,
}

/// Load ids: 0 is no load (an empty memo matches no snapshot).
static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Loads the configuration rooted at `path`.
pub fn load(path: &Path) -> Result<Loaded, Problems> {
    load_after(path, None)
}

/// Loads a configuration that replaces `previous`: servers that stay (same
/// backend, name and address) keep their live counters, and backends keep
/// their round-robin position. Every map and backend is built anew.
pub fn load_after(path: &Path, previous: Option<&Snapshot>) -> Result<Loaded, Problems> {
    load_with(path, previous.map(|p| Carried::from_previous(p, None)))
}

/// [`load_after`] that also reuses, as they are, the compiled maps and
/// backends whose files are the text `memo` says `previous` was built
/// from. A memo of another snapshot is not used: everything is built anew.
pub fn reload(path: &Path, previous: &Snapshot, memo: &Memo) -> Result<Loaded, Problems> {
    let memo = (memo.built == previous.load_id).then_some(memo);
    load_with(path, Some(Carried::from_previous(previous, memo)))
}

fn load_with(path: &Path, carried: Option<Carried>) -> Result<Loaded, Problems> {
    let mut cx = Context {
        carried: carried.unwrap_or_default(),
        ..Context::default()
    };
    let snapshot = cx.load(path).map(|mut snapshot| {
        snapshot.load_id = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        snapshot
    });
    // Each file's problems in line order, files in the order they were read.
    let order = |p: &Problem| (cx.files.iter().position(|f| *f == p.file), p.line);
    cx.errors.sort_by_key(order);
    cx.warnings.sort_by_key(order);
    match snapshot {
        Some(snapshot) if cx.errors.is_empty() => Ok(Loaded {
            memo: Memo {
                built: snapshot.load_id,
                maps: cx.memo,
                backends: cx.backends_memo.map(Arc::new),
            },
            snapshot,
            warnings: cx.warnings,
        }),
        _ => Err(Problems {
            errors: cx.errors,
            warnings: cx.warnings,
        }),
    }
}

/// Problems found so far, and the state carried over from the previous
/// configuration.
#[derive(Default)]
pub(super) struct Context {
    pub(super) errors: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
    pub(super) files: Vec<PathBuf>,
    pub(super) carried: Carried,
    /// What each map was built from (handed back in [`Memo`]).
    memo: MapMemo,
    /// The backend at each id: name, termination, mode (what a map's
    /// values mean).
    kinds: Vec<BackendKind>,
    /// What the backends were built from, when only their files went in.
    backends_memo: Option<BackendMemo>,
    /// `[limits] ipv6_source_prefix`, for the listeners' source limits.
    pub(super) ipv6_source_prefix: u8,
    /// Directory of the main file: relative paths start here.
    pub(super) base: PathBuf,
    /// `[tls] min_version = "1.3"`.
    pub(super) min_tls13: bool,
    /// What listeners that set no `max_connections` were sized to, when
    /// the open files allow fewer than the default.
    pub(super) sized_max_connections: Option<u64>,
}

impl Context {
    /// Reads the main file and everything it names, in the order the
    /// parts depend on each other: `[limits]` and `[defaults]`, the
    /// backends, the maps that name them, certificates, listeners.
    fn load(&mut self, path: &Path) -> Option<Snapshot> {
        let text = self.read(path)?;
        let src = Source { path, text: &text };
        let raw: RawConfig = self.parse_toml(&src)?;
        self.base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.min_tls13 = self.min_tls13(&src, &raw.tls);
        // Read before the backends: their per-source limits group by it.
        self.ipv6_source_prefix = self.ipv6_source_prefix(&src, &raw.limits);
        let defaults = self.defaults(&src, &raw.defaults);
        let main = digest_of(&text);
        let (backends, names) = match self.reuse_backends(main) {
            Some(reused) => reused,
            None => self.all_backends(&src, main, raw.backends, &raw.backend_files, &defaults),
        };
        self.kinds = backends.iter().map(|b| kind_of(b)).collect();
        let routes = self.routes(&raw.maps, &names, &backends);
        let certs = self.certificates(&src, &raw.tls, &raw.maps);
        self.check_terminated_have_certs(&src, &raw.maps, &backends, certs.is_some());
        let buffer_memory = self.buffer_memory(&src, &raw.limits.buffer_memory);
        let (listeners, tls) = self.listeners(&src, &raw.listeners, &names, certs.as_ref());
        let stats = self.stats(&src, &raw.stats);
        let http = HttpSettings {
            timeouts: defaults.timeouts,
            error_page_503: self.error_page(&src, &raw.http.error_page_503),
        };
        Some(Snapshot {
            http,
            buffer_memory,
            splice: raw.relay.splice.unwrap_or(true),
            listeners,
            tls,
            stats,
            routes,
            backends,
            generation: 0,
            load_id: 0,
            sized_max_connections: self.sized_max_connections,
            files: self.files.clone(),
            watch: raw.reload.watch.unwrap_or(true),
            close_removed_after: raw
                .reload
                .close_removed_after
                .as_ref()
                .map(|d| self.duration(&src, &Some(d.clone()), Duration::ZERO)),
        })
    }

    /// `[http] error_page_503`: the body of the router's 503 responses.
    fn error_page(
        &mut self,
        src: &Source<'_>,
        page: &Option<Spanned<String>>,
    ) -> Option<bytes::Bytes> {
        let p = page.as_ref()?;
        let path = self.base.join(p.get_ref());
        self.files.push(path.clone());
        match std::fs::read(&path) {
            Ok(page) => Some(bytes::Bytes::from(page)),
            Err(e) => {
                let m = format!("error_page_503 `{}`: cannot read: {e}", path.display());
                self.error(src, p.span(), m);
                None
            }
        }
    }

    fn read(&mut self, path: &Path) -> Option<String> {
        self.files.push(path.to_path_buf());
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                self.errors.push(Problem {
                    file: path.to_path_buf(),
                    line: None,
                    message: format!("cannot read: {e}"),
                });
                None
            }
        }
    }

    fn parse_toml<T: serde::de::DeserializeOwned>(&mut self, src: &Source<'_>) -> Option<T> {
        match toml::from_str(src.text) {
            Ok(raw) => Some(raw),
            Err(e) => {
                let message = e.message().to_string();
                self.errors.push(match e.span() {
                    Some(span) => src.problem(span, message),
                    None => Problem {
                        file: src.path.to_path_buf(),
                        line: None,
                        message,
                    },
                });
                None
            }
        }
    }

    fn error(&mut self, src: &Source<'_>, span: std::ops::Range<usize>, message: String) {
        self.errors.push(src.problem(span, message));
    }

    fn opt_parse<T: std::str::FromStr<Err = String>>(
        &mut self,
        src: &Source<'_>,
        value: &Option<Spanned<String>>,
    ) -> Option<T> {
        let value = value.as_ref()?;
        match value.get_ref().parse() {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(src, value.span(), message);
                None
            }
        }
    }

    /// `deny_ja4 = [...]`: JA4 fingerprints, each checked (file:line for
    /// one that is not). An empty list denies nothing and is left out.
    pub(super) fn fingerprints(
        &mut self,
        src: &Source<'_>,
        raw: &Option<Vec<Spanned<String>>>,
    ) -> Option<std::sync::Arc<[crate::model::wire::client_hello::Ja4]>> {
        let list: Vec<_> = raw
            .iter()
            .flatten()
            .filter_map(|text| match text.get_ref().parse() {
                Ok(ja4) => Some(ja4),
                Err(m) => {
                    self.error(src, text.span(), format!("deny_ja4: {m}"));
                    None
                }
            })
            .collect();
        (!list.is_empty()).then(|| list.into())
    }

    pub(super) fn duration(
        &mut self,
        src: &Source<'_>,
        value: &Option<Spanned<String>>,
        fallback: Duration,
    ) -> Duration {
        let Some(value) = value else { return fallback };
        match duration::parse(value.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(src, value.span(), "a timeout of zero is not allowed".into());
                fallback
            }
            Err(message) => {
                self.error(src, value.span(), message);
                fallback
            }
        }
    }

    fn bounded(
        &mut self,
        src: &Source<'_>,
        value: &Option<Spanned<u64>>,
        fallback: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> u64 {
        match value {
            None => fallback,
            Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                let m = format!(
                    "{} is outside {}..={}",
                    v.get_ref(),
                    range.start(),
                    range.end()
                );
                self.error(src, v.span(), m);
                fallback
            }
        }
    }

    fn retries(&mut self, src: &Source<'_>, value: &Option<Spanned<u64>>, fallback: u32) -> u32 {
        match value {
            None => fallback,
            Some(v) if *v.get_ref() <= 16 => *v.get_ref() as u32,
            Some(v) => {
                self.error(
                    src,
                    v.span(),
                    format!("retries {} is above 16", v.get_ref()),
                );
                fallback
            }
        }
    }
}

/// A map value: the name of a defined backend of one of the `kinds`.
/// SHA-256 of a file's text.
pub(super) type Digest = [u8; 32];

fn digest_of(text: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

//! The router's own loader over what `generate` is about to publish: the
//! configuration is written to a private scratch directory and loaded as
//! `switchyard check` loads it. What the loader refuses is never
//! published, so the router never sees a configuration it would refuse.

use std::path::{Path, PathBuf};

use super::objects::Object;
use super::Options;

/// Generates `objects` as `options` asks, in the form the router loads
/// (a `switchyard.toml` naming every file by a relative name), and loads
/// it. The stats password file is left out: it belongs to the router's
/// pod, not to this one. Returns the loader's problems, one a line.
pub fn loads(objects: &[Object], options: &Options) -> Result<(), Vec<String>> {
    let scratch = Scratch::new().map_err(|e| vec![format!("scratch directory: {e}")])?;
    let probe = Options {
        out: scratch.0.clone(),
        maps_only: false,
        stats_password_file: None,
        ..options.clone()
    };
    let (files, _) = super::generate(objects, &probe);
    for (name, (bytes, _)) in &files {
        std::fs::write(scratch.0.join(name), bytes)
            .map_err(|e| vec![format!("{}: {e}", scratch.0.join(name).display())])?;
    }
    match crate::config::load(&scratch.0.join("switchyard.toml")) {
        Ok(_) => Ok(()),
        Err(problems) => Err(problems
            .errors
            .iter()
            .map(|p| strip(&p.to_string(), &scratch.0))
            .collect()),
    }
}

/// A loader's line without the scratch directory's name.
fn strip(line: &str, dir: &Path) -> String {
    let prefix = format!("{}/", dir.display());
    line.replace(&prefix, "")
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("switchyard-generate-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Private: it holds the routes' keys for a moment.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

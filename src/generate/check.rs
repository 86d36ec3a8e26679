//! The router's own loader over what `generate` is about to publish: the
//! files are written to a private scratch directory (a random name,
//! created exclusively, mode 0700) and loaded as `switchyard check`
//! loads them. What the loader refuses is never published, so the router
//! never sees a configuration it would refuse.

use super::write::{main_file, Files};
use super::Options;

/// Loads `files`, as `generate` wrote them for `options`. Two things
/// differ from the published directory, both outside what the objects
/// decide: the stats password file, which belongs to the router's pod and
/// is left out; and with `--maps-only`, the absolute names the files
/// carry, made relative, with a `switchyard.toml` naming them. Returns the
/// loader's problems, one a line.
pub fn loads(files: &Files, options: &Options) -> Result<(), Vec<String>> {
    let scratch = tempfile::Builder::new()
        .prefix("switchyard-generate-")
        .tempdir()
        .map_err(|e| vec![format!("scratch directory: {e}")])?;
    let dir = scratch.path();
    let out = format!("{}/", options.out.display());
    for (name, (bytes, _)) in files {
        let bytes = match (options.maps_only, std::str::from_utf8(bytes)) {
            (true, Ok(text)) => text.replace(&out, "").into_bytes(),
            _ => bytes.clone(),
        };
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| vec![format!("{}: {e}", dir.join(name).display())])?;
    }
    let probe = Options {
        stats_password_file: None,
        ..options.clone()
    };
    let main = dir.join("switchyard.toml");
    if options.maps_only || options.stats_password_file.is_some() {
        std::fs::write(&main, main_file(&probe))
            .map_err(|e| vec![format!("{}: {e}", main.display())])?;
    }
    let prefix = format!("{}/", dir.display());
    match crate::config::load(&main) {
        Ok(_) => Ok(()),
        Err(problems) => Err(problems
            .errors
            .iter()
            .map(|p| p.to_string().replace(&prefix, ""))
            .collect()),
    }
}

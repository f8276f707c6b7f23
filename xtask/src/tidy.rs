//! The tidy test: house rules over the whole tree, checked by `cargo test` like any other test.
//!
//! Every Rust file opens with a `//!` line saying what it is; a file past 600 lines says why it
//! is not split; no placeholder markers; every path `docs/ARCHITECTURE.md` names exists, and
//! every top-level module of every crate is named there.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Past this many lines a file must say why it is one file.
    const LONG_FILE_LINES: usize = 600;
    /// The phrase a long file uses to say why (anywhere in a comment).
    const LONG_FILE_REASON: &str = "longer than 600 lines because";
    /// Directories never walked: build output, downloaded packages, version control.
    const SKIPPED_DIRS: &[&str] = &["target", "node_modules", ".git", "corpus", "artifacts"];

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask sits in the workspace")
            .to_path_buf()
    }

    /// Every file under the workspace root, as paths relative to it.
    fn tree() -> Vec<PathBuf> {
        let root = root();
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if path.is_dir() {
                    if !SKIPPED_DIRS.iter().any(|skip| name == *skip) {
                        dirs.push(path);
                    }
                } else if let Ok(relative) = path.strip_prefix(&root) {
                    files.push(relative.to_path_buf());
                }
            }
        }
        files.sort();
        files
    }

    fn rust_files() -> Vec<(PathBuf, String)> {
        let root = root();
        tree()
            .into_iter()
            .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
            .map(|path| {
                let text = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
                (path, text)
            })
            .collect()
    }

    #[test]
    fn every_rust_file_opens_with_a_module_doc_line() {
        let missing: Vec<_> = rust_files()
            .into_iter()
            .filter(|(_, text)| !text.starts_with("//!"))
            .map(|(path, _)| path.display().to_string())
            .collect();
        assert!(missing.is_empty(), "no `//!` first line: {missing:#?}");
    }

    #[test]
    fn a_file_past_600_lines_says_why() {
        let unexplained: Vec<_> = rust_files()
            .into_iter()
            .filter(|(_, text)| {
                text.lines().count() > LONG_FILE_LINES
                    && !text.to_lowercase().contains(LONG_FILE_REASON)
            })
            .map(|(path, text)| format!("{} ({} lines)", path.display(), text.lines().count()))
            .collect();
        assert!(
            unexplained.is_empty(),
            "split these, or say why in a comment with \"{LONG_FILE_REASON}\": {unexplained:#?}"
        );
    }

    #[test]
    fn no_placeholder_markers() {
        // Spelled in pieces so this file does not match itself.
        let markers = [
            concat!("TO", "DO"),
            concat!("tod", "o!("),
            concat!("unimplemen", "ted!("),
        ];
        let found: Vec<_> = rust_files()
            .into_iter()
            .filter_map(|(path, text)| {
                markers
                    .iter()
                    .find(|marker| text.contains(**marker))
                    .map(|marker| format!("{}: {marker}", path.display()))
            })
            .collect();
        assert!(found.is_empty(), "placeholders left in: {found:#?}");
    }

    /// The backticked words of `docs/ARCHITECTURE.md`.
    fn architecture_names() -> Vec<String> {
        let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md"))
            .expect("docs/ARCHITECTURE.md is readable");
        doc.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    /// Backticked words that look like paths but name no file of the tree: an MQTT topic, and a
    /// settings file each board's user creates (untracked).
    const NOT_TREE_PATHS: &[&str] = &["downlink/", "config.local.toml"];

    /// Whether a backticked word is meant as a path in the tree.
    fn looks_like_a_path(word: &str) -> bool {
        const EXTENSIONS: &[&str] = &[".rs", ".md", ".sh", ".toml", ".sql", ".js", ".html"];
        !word.contains(char::is_whitespace)
            && !NOT_TREE_PATHS.contains(&word)
            && !word.starts_with('~')
            && !word.contains("://")
            && !word.contains(['*', '<', '>'])
            && (EXTENSIONS.iter().any(|ext| word.ends_with(ext))
                || (word.ends_with('/') && word.len() > 1))
    }

    #[test]
    fn every_path_the_architecture_doc_names_exists() {
        let files: Vec<String> = tree()
            .iter()
            .map(|path| format!("/{}", path.display()))
            .collect();
        let absent: Vec<String> = architecture_names()
            .into_iter()
            .filter(|word| looks_like_a_path(word))
            .filter(|word| {
                let suffix = format!("/{}", word.trim_start_matches("./"));
                !files.iter().any(|file| {
                    file.ends_with(&suffix) || (suffix.ends_with('/') && file.contains(&suffix))
                })
            })
            .collect();
        assert!(
            absent.is_empty(),
            "docs/ARCHITECTURE.md names paths that do not exist: {absent:#?}"
        );
    }

    #[test]
    fn every_top_level_module_is_named_in_the_architecture_doc() {
        let names = architecture_names();
        let named = |module: &str| {
            names.iter().any(|word| {
                let word = word.trim_end_matches('/').trim_end_matches(".rs");
                word == module || word.ends_with(&format!("/{module}"))
            })
        };
        let crates = [
            "crates/blynk-proto/src",
            "crates/blynk-device/src",
            "crates/blynk-client/src",
            "crates/blynk-cli/src",
            "crates/blynk-load/src",
            "crates/blynk-testbed/src",
            "server/src",
            "xtask/src",
        ];
        let mut unnamed = Vec::new();
        for dir in crates {
            let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().to_string();
                let module = file.trim_end_matches(".rs");
                let is_module = entry.path().is_dir() || file.ends_with(".rs");
                if is_module && !["lib", "main", "bin"].contains(&module) && !named(module) {
                    unnamed.push(format!("{dir}/{file}"));
                }
            }
        }
        unnamed.sort();
        assert!(
            unnamed.is_empty(),
            "top-level modules docs/ARCHITECTURE.md does not name: {unnamed:#?}"
        );
    }
}

//! Putting a rendered file in place as confd does: staged beside the
//! destination, skipped when nothing changed, checked, renamed over the
//! destination (atomic), then the reload command. Blocking; no async.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The mode a new destination gets.
const NEW_FILE_MODE: u32 = 0o644;
/// How much of a failed command's output an error quotes.
const OUTPUT_QUOTED_BYTES: usize = 512;

/// The commands around a swap. In `check`, `{{.src}}` stands for the staged
/// file's path (confd's convention).
#[derive(Debug, Clone, Default)]
pub struct Commands {
    pub check: Option<String>,
    pub reload: Option<String>,
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The destination already held the rendered text: nothing was run.
    Unchanged,
    /// The destination was replaced and the reload command (if any) ran.
    Replaced,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot stage {path}: {io}")]
    Staging { path: PathBuf, io: std::io::Error },
    #[error("cannot run {command:?}: {io}")]
    Spawn { command: String, io: std::io::Error },
    #[error("check command {command:?} failed ({status}), {dest} left as it was: {output}")]
    CheckFailed {
        command: String,
        status: String,
        dest: PathBuf,
        output: String,
    },
    #[error("cannot move the staged file over {dest}: {io}")]
    Swap { dest: PathBuf, io: std::io::Error },
    #[error("reload command {command:?} failed ({status}) after {dest} was replaced: {output}")]
    ReloadFailed {
        command: String,
        status: String,
        dest: PathBuf,
        output: String,
    },
}

/// Makes `dest` hold `contents`: see the module docs. On any failure before
/// the rename the staged file is removed and `dest` is untouched.
pub fn sync(dest: &Path, contents: &[u8], commands: &Commands) -> Result<Outcome, StageError> {
    let existing = fs::metadata(dest).ok();
    let mode = existing.as_ref().map_or(NEW_FILE_MODE, |metadata| {
        metadata.permissions().mode() & 0o7777
    });
    // confd compares md5 sums; comparing the bytes says the same.
    if existing.is_some() && fs::read(dest).is_ok_and(|current| current == contents) {
        return Ok(Outcome::Unchanged);
    }
    let staging = |io| StageError::Staging {
        path: dest.to_path_buf(),
        io,
    };
    let directory = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = dest
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dotfile in the destination's directory, so the rename stays on one
    // file system; dropped (removed) on every early return.
    let mut staged = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .tempfile_in(directory)
        .map_err(staging)?;
    staged.write_all(contents).map_err(staging)?;
    staged
        .as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(staging)?;
    if let Some(metadata) = &existing {
        use std::os::unix::fs::MetadataExt as _;
        // Only root may give a file away; anyone may keep their own.
        let owner = staged.as_file().metadata().map_err(staging)?;
        if (owner.uid(), owner.gid()) != (metadata.uid(), metadata.gid()) {
            std::os::unix::fs::fchown(staged.as_file(), Some(metadata.uid()), Some(metadata.gid()))
                .map_err(staging)?;
        }
    }
    staged.as_file().sync_all().map_err(staging)?;
    if let Some(check) = &commands.check {
        let staged_path = staged.path().to_string_lossy().into_owned();
        let command = check
            .replace("{{.src}}", &staged_path)
            .replace("{{ .src }}", &staged_path);
        let (success, status, output) = run(&command)?;
        if !success {
            return Err(StageError::CheckFailed {
                command,
                status,
                dest: dest.to_path_buf(),
                output,
            });
        }
    }
    staged.persist(dest).map_err(|error| StageError::Swap {
        dest: dest.to_path_buf(),
        io: error.error,
    })?;
    // The rename is durable once the directory is.
    if let Ok(directory) = fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    if let Some(reload) = &commands.reload {
        let (success, status, output) = run(reload)?;
        if !success {
            return Err(StageError::ReloadFailed {
                command: reload.clone(),
                status,
                dest: dest.to_path_buf(),
                output,
            });
        }
    }
    Ok(Outcome::Replaced)
}

/// Runs `command` with `/bin/sh -c`: whether it succeeded, its exit status
/// and the end of its output (stderr, else stdout) on one line.
fn run(command: &str) -> Result<(bool, String, String), StageError> {
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .output()
        .map_err(|io| StageError::Spawn {
            command: command.to_string(),
            io,
        })?;
    let said = if output.stderr.is_empty() {
        &output.stdout
    } else {
        &output.stderr
    };
    let said = String::from_utf8_lossy(said);
    let said = said.trim();
    let start = said
        .char_indices()
        .map(|(index, _)| index)
        .find(|&index| said.len() - index <= OUTPUT_QUOTED_BYTES)
        .unwrap_or(said.len());
    let one_line = said[start..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Ok((output.status.success(), output.status.to_string(), one_line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(check: Option<&str>, reload: Option<&str>) -> Commands {
        Commands {
            check: check.map(String::from),
            reload: reload.map(String::from),
        }
    }

    /// The files in `directory` (the staged file must not be left behind).
    fn files(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_file_is_written_with_mode_0644_and_reloaded() {
        let directory = tempfile::tempdir().unwrap();
        let dest = directory.path().join("app.conf");
        let marker = directory.path().join("reloaded");
        let reload = format!("touch {}", marker.display());
        let outcome = sync(
            &dest,
            b"one\n",
            &commands(Some("test -s {{.src}}"), Some(&reload)),
        )
        .unwrap();
        assert_eq!(outcome, Outcome::Replaced);
        assert_eq!(fs::read_to_string(&dest).unwrap(), "one\n");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        assert!(marker.exists(), "the reload command ran");
        assert_eq!(files(directory.path()), ["app.conf", "reloaded"]);
    }

    #[test]
    fn an_unchanged_file_runs_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let dest = directory.path().join("app.conf");
        fs::write(&dest, "same").unwrap();
        let outcome = sync(&dest, b"same", &commands(Some("false"), Some("false"))).unwrap();
        assert_eq!(outcome, Outcome::Unchanged);
    }

    #[test]
    fn a_failed_check_keeps_the_old_file_and_removes_the_staged_one() {
        let directory = tempfile::tempdir().unwrap();
        let dest = directory.path().join("app.conf");
        fs::write(&dest, "old").unwrap();
        let marker = directory.path().join("reloaded");
        let error = sync(
            &dest,
            b"new",
            &commands(
                Some("grep -q old {{.src}} || { echo 'bad config' >&2; exit 3; }"),
                Some(&format!("touch {}", marker.display())),
            ),
        )
        .expect_err("the check fails");
        assert!(matches!(error, StageError::CheckFailed { .. }), "{error}");
        assert!(error.to_string().contains("bad config"), "{error}");
        assert_eq!(fs::read_to_string(&dest).unwrap(), "old");
        assert!(!marker.exists(), "no reload after a failed check");
        assert_eq!(files(directory.path()), ["app.conf"]);
    }

    #[test]
    fn the_check_sees_the_staged_file_and_the_mode_is_kept() {
        let directory = tempfile::tempdir().unwrap();
        let dest = directory.path().join("app.conf");
        fs::write(&dest, "old").unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
        let seen = directory.path().join("seen");
        let check = format!("cp {{{{.src}}}} {}", seen.display());
        sync(&dest, b"new", &commands(Some(&check), None)).unwrap();
        assert_eq!(
            fs::read_to_string(&seen).unwrap(),
            "new",
            "the check read the staged text"
        );
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn a_failed_reload_is_an_error_after_the_swap() {
        let directory = tempfile::tempdir().unwrap();
        let dest = directory.path().join("app.conf");
        let error = sync(&dest, b"new", &commands(None, Some("exit 4"))).expect_err("reload fails");
        assert!(matches!(error, StageError::ReloadFailed { .. }), "{error}");
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new");
    }

    #[test]
    fn a_missing_directory_is_a_staging_error() {
        let directory = tempfile::tempdir().unwrap();
        let dest = directory.path().join("absent/app.conf");
        let error = sync(&dest, b"x", &Commands::default()).expect_err("no directory");
        assert!(matches!(error, StageError::Staging { .. }), "{error}");
    }
}

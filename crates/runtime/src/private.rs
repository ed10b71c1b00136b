//! Files trailhound writes hold an organization's activity (who did what,
//! from where, what it cost) and secrets' side effects: they are private
//! to the user running it. Directories are created 0700 and files 0600,
//! whatever the umask.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// The files in `dir` named `*.ext`, by name (a spool's files are named
/// by time: oldest first); none when `dir` does not exist. Files being
/// written under another extension (`.tmp`) are left out.
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Creates `dir` (and its parents) and makes it 0700.
pub fn dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Makes an existing file 0600 (a store another library created).
pub fn file(path: &Path) -> io::Result<()> {
    set_mode(path, 0o600)
}

/// Creates the folder of `path` if it is missing (0700).
pub fn parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.exists() => dir(d),
        _ => Ok(()),
    }
}

fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Opens `path` for appending, creating it 0600 (an existing file is made
/// 0600 too).
pub fn append(path: &Path) -> io::Result<File> {
    parent(path)?;
    let f = options().create(true).append(true).open(path)?;
    file(path)?;
    Ok(f)
}

/// Creates (or truncates) `path` for writing, 0600.
pub fn create(path: &Path) -> io::Result<File> {
    parent(path)?;
    let f = options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file(path)?;
    Ok(f)
}

/// Writes `bytes` to `path`, 0600.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    use std::io::Write;
    create(path)?.write_all(bytes.as_ref())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is its failure report

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_are_0700_and_files_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("data/nested");
        dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("a.jsonl");
        append(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        append(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        let g = tmp.path().join("fresh/b.json");
        write(&g, "{}").unwrap();
        assert_eq!(mode(&g), 0o600);
        assert_eq!(mode(g.parent().unwrap()), 0o700);
    }
}

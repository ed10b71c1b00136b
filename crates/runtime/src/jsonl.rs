//! JSON Lines files a service appends to and an operator reads: dead
//! letters above all. Opened private and in append mode, one value a line,
//! flushed when the caller says; rewritten atomically when entries are
//! taken out (a re-send), so a crash never leaves half a file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

/// An open JSON Lines file; writers take turns through [`JsonLines::lock`].
pub struct JsonLines {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

trailhound_core::debug_fields!(JsonLines { path });

/// The file held for one writer: lines pushed are buffered until
/// [`Lines::flush`].
pub struct Lines<'a>(MutexGuard<'a, BufWriter<File>>);

impl Lines<'_> {
    /// Writes `value` as one line; false if it could not be written.
    pub fn push(&mut self, value: &impl Serialize) -> bool {
        serde_json::to_writer(&mut *self.0, value).is_ok() && self.0.write_all(b"\n").is_ok()
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl JsonLines {
    /// Opens (creating, private) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let f = crate::private::append(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::new(f)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file, for writing; a writer that panicked leaves it usable.
    pub fn lock(&self) -> Lines<'_> {
        Lines(self.out.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The file's lines now, and how many bytes they were: hand both to
    /// [`JsonLines::replace`] after dealing with them.
    pub fn read_lines(&self) -> std::io::Result<(Vec<String>, u64)> {
        let mut out = self.lock();
        out.flush()?;
        let bytes = std::fs::read(&self.path)?;
        let lines = String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        Ok((lines, bytes.len() as u64))
    }

    /// Rewrites the file atomically (a temp file, then rename) as `keep`
    /// followed by whatever was appended after the first `read` bytes
    /// since [`JsonLines::read_lines`]. Later lines go to the new file.
    pub fn replace(&self, keep: &[String], read: u64) -> std::io::Result<()> {
        let mut out = self.lock();
        out.flush()?;
        let now = std::fs::read(&self.path)?;
        let appended = usize::try_from(read)
            .ok()
            .and_then(|r| now.get(r..))
            .unwrap_or_default();
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let tmp = self.path.with_file_name(name);
        {
            let mut f = BufWriter::new(crate::private::create(&tmp)?);
            for line in keep {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
            }
            f.write_all(appended)?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        // Opened before the rename, so the handle follows the new file.
        let f = OpenOptions::new().append(true).open(&tmp)?;
        std::fs::rename(&tmp, &self.path)?;
        *out.0 = BufWriter::new(f);
        Ok(())
    }
}

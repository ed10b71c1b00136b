//! Embedded stores (redb), opened one way: the directory and file private
//! to the service's user, the tables created in one transaction, every
//! failure as one message naming what failed. detect, insights, notify,
//! enrich and the OpenSearch results poller each keep their own tables.

use std::path::Path;
use std::sync::Arc;

/// Which store failed and how, for the caller's own error type (each
/// service's error enum has a variant with exactly these two fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub path: String,
    pub message: String,
}

/// Declares a service's store error `$name`: the file and what failed,
/// shown as "`$what` <path>: <message>", made from a [`Failure`] (so `?`
/// turns one into the other).
#[macro_export]
macro_rules! store_error {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            pub path: String,
            pub message: String,
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{} {}: {}", $what, self.path, self.message)
            }
        }

        impl ::std::error::Error for $name {}

        impl From<$crate::store::Failure> for $name {
            fn from(f: $crate::store::Failure) -> Self {
                Self {
                    path: f.path,
                    message: f.message,
                }
            }
        }
    };
}

/// An open redb store and the path its errors name; cheap to clone. It
/// derefs to the database so transactions are begun as usual.
#[derive(Clone)]
pub struct Db {
    db: Arc<redb::Database>,
    path: String,
}

trailhound_core::debug_fields!(Db { path });

impl Db {
    /// [`open`], keeping the path for the errors that follow.
    pub fn open(
        path: &Path,
        tables: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::TableError>,
    ) -> Result<Self, Failure> {
        let p = path.display().to_string();
        match open(path, tables) {
            Ok(db) => Ok(Self {
                db: Arc::new(db),
                path: p,
            }),
            Err(message) => Err(Failure { path: p, message }),
        }
    }

    /// The path as errors show it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `e`, as a failure of this store.
    pub fn fail(&self, e: impl std::fmt::Display) -> Failure {
        Failure {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl std::ops::Deref for Db {
    type Target = redb::Database;
    fn deref(&self) -> &redb::Database {
        &self.db
    }
}

/// Opens (creating if absent) the redb file at `path` with its parent
/// directory and the file itself private, and creates the tables `tables`
/// opens. The error is a sentence for the caller's own error type.
pub fn open(
    path: &Path,
    tables: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::TableError>,
) -> Result<redb::Database, String> {
    crate::private::parent(path).map_err(|e| e.to_string())?;
    let db = redb::Database::create(path).map_err(|e| e.to_string())?;
    crate::private::file(path).map_err(|e| e.to_string())?;
    let w = db.begin_write().map_err(|e| e.to_string())?;
    tables(&w).map_err(|e| e.to_string())?;
    w.commit().map_err(|e| e.to_string())?;
    Ok(db)
}

/// A key that sorts by time as text, then by `id`: records listed newest
/// or oldest first by a range scan. Offset so that times before 1970 sort
/// too.
pub fn time_key(ms: i64, id: &str) -> String {
    format!("{}|{id}", sortable_ms(ms))
}

/// `ms` as fixed-width text that sorts as the number does, for keys that
/// put a time after other parts.
pub fn sortable_ms(ms: i64) -> String {
    format!("{:020}", (ms as i128 + (1i128 << 62)) as u128)
}

/// One page of JSON records read newest first through a time index (keys
/// "<time>|<id>", see [`time_key`], over the range `index`): each id is
/// looked up in `records`; unreadable records and those `keep` refuses are
/// skipped. At most `limit` come back, with the index key to continue
/// before when more remain.
pub fn newest_first<T, V>(
    index: redb::Range<'_, &'static str, V>,
    records: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    limit: usize,
    mut keep: impl FnMut(&T) -> bool,
) -> Result<(Vec<T>, Option<String>), redb::StorageError>
where
    T: serde::de::DeserializeOwned,
    V: redb::Value + 'static,
{
    let mut out = Vec::new();
    let mut last = None;
    for item in index.rev() {
        let (k, _) = item?;
        let key = k.value().to_string();
        let Some((_, id)) = key.split_once('|') else {
            continue;
        };
        let Some(v) = records.get(id)? else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<T>(v.value()) else {
            continue;
        };
        if !keep(&record) {
            continue;
        }
        if out.len() == limit {
            return Ok((out, last));
        }
        out.push(record);
        last = Some(key);
    }
    Ok((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("t");

    #[test]
    fn opens_private_with_its_tables_and_keys_sort_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("s.redb");
        let db = open(&path, |w| w.open_table(T).map(|_| ())).unwrap();
        // The table exists for a reader straight away.
        let r = db.begin_read().unwrap();
        use redb::ReadableTableMetadata;
        assert_eq!(r.open_table(T).unwrap().len().unwrap(), 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let mut keys = [
            time_key(5_000, "b"),
            time_key(-3_000, "a"),
            time_key(5_000, "a"),
            time_key(0, "z"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                time_key(-3_000, "a"),
                time_key(0, "z"),
                time_key(5_000, "a"),
                time_key(5_000, "b"),
            ]
        );
        // A file that is not a database is a clear error, not a panic.
        let bad = dir.path().join("bad.redb");
        std::fs::write(&bad, b"not a database at all, just text").unwrap();
        assert!(open(&bad, |_| Ok(())).is_err());
    }
}

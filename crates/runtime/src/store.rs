//! Embedded stores (redb), opened one way: the directory and file private
//! to the service's user, the tables created in one transaction, every
//! failure as one message naming what failed. detect, insights, notify,
//! enrich and the OpenSearch results poller each keep their own tables.

use std::path::Path;

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
    format!("{:020}|{id}", (ms as i128 + (1i128 << 62)) as u128)
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

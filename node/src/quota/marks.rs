//! The used-count mark of every quota lease this node holds, on its own disk.
//!
//! A node admits from a lease only below the lease's persisted mark, and raises the mark (one
//! fsync) a step ahead of what it admits. After a crash it closes its old leases with these
//! marks, which are at least what it admitted, so it gives back everything but at most one step
//! per lease instead of counting every held slice as fully used. A lease without a mark counts
//! as fully used, so losing this file (or failing to write it) strands capacity but never
//! over-admits.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Lease id → the most this node may have admitted from it.
const MARKS: TableDefinition<u64, u64> = TableDefinition::new("lease_marks");

pub(crate) struct Marks {
    db: Database,
}

impl Marks {
    pub fn open(path: &Path) -> Result<Self, String> {
        aigw_cluster::create_private_file(path)
            .map_err(|e| format!("cannot create the quota marks at {}: {e}", path.display()))?;
        let db = Database::create(path)
            .map_err(|e| format!("cannot open the quota marks at {}: {e}", path.display()))?;
        Ok(Self { db })
    }

    /// Every persisted mark.
    pub fn all(&self) -> Result<Vec<(u64, u64)>, String> {
        let read = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = match read.open_table(MARKS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        };
        let mut marks = Vec::new();
        for entry in table.iter().map_err(|e| e.to_string())? {
            let (lease, mark) = entry.map_err(|e| e.to_string())?;
            marks.push((lease.value(), mark.value()));
        }
        Ok(marks)
    }

    /// Persists `mark` for `lease` (durably: the write is fsynced before this returns). Marks
    /// only rise: two raises that commit out of order leave the higher one.
    pub fn set(&self, lease: u64, mark: u64) -> Result<(), String> {
        self.write(|table| {
            let higher = table.get(lease)?.map(|m| m.value()).unwrap_or(0).max(mark);
            table.insert(lease, higher).map(drop)
        })
    }

    /// Forgets the marks of closed leases.
    pub fn remove(&self, leases: &[u64]) -> Result<(), String> {
        self.write(|table| {
            for lease in leases {
                table.remove(lease)?;
            }
            Ok(())
        })
    }

    fn write(
        &self,
        change: impl FnOnce(&mut redb::Table<'_, u64, u64>) -> Result<(), redb::StorageError>,
    ) -> Result<(), String> {
        let write = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = write.open_table(MARKS).map_err(|e| e.to_string())?;
            change(&mut table).map_err(|e| e.to_string())?;
        }
        write.commit().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_reopening_and_removal_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marks.redb");
        {
            let marks = Marks::open(&path).unwrap();
            assert_eq!(marks.all().unwrap(), vec![]);
            marks.set(7, 10).unwrap();
            marks.set(7, 20).unwrap();
            marks.set(7, 15).unwrap(); // a raise that committed late
            marks.set(9, 5).unwrap();
        }
        let marks = Marks::open(&path).unwrap();
        assert_eq!(marks.all().unwrap(), vec![(7, 20), (9, 5)]);
        marks.remove(&[7, 42]).unwrap();
        assert_eq!(marks.all().unwrap(), vec![(9, 5)]);
    }
}

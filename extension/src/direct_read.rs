//! Reading rows of smsbus's small tables (`channel`, `channel_wakeup`)
//! from Rust without an SQL statement: a heap scan under the running
//! statement's snapshot or a fresh one.
//!
//! A single-row INSERT into `smsbus.message` looks its channel up; through
//! SPI that lookup cost as much as a tenth of the whole INSERT. These tables
//! hold a row per channel, so a scan reads a page or two.

use std::ffi::CStr;
use std::num::NonZeroUsize;

use pgrx::pg_sys;
use pgrx::FromDatum;
use pgrx::IntoDatum;

/// The 0-based position of column `name` in `desc`; None when there is none.
pub(crate) fn column_of(desc: pg_sys::TupleDesc, name: &CStr) -> Option<usize> {
    // SAFETY: `desc` is a live descriptor; its attributes are `natts` long.
    let natts = unsafe { (*desc).natts } as usize;
    (0..natts).find(|&i| {
        let att = unsafe { &*(*desc).attrs.as_ptr().add(i) };
        !att.attisdropped && unsafe { CStr::from_ptr(att.attname.data.as_ptr()) } == name
    })
}

/// The 0-based position of column `column` of table `smsbus.<table>`,
/// whose descriptor is `desc`; refused when the table lacks it.
pub(crate) fn required_column(desc: pg_sys::TupleDesc, table: &CStr, column: &CStr) -> usize {
    column_of(desc, column).unwrap_or_else(|| {
        crate::internal(format!(
            "smsbus.{} has no column {}: reinstall the extension",
            table.to_string_lossy(),
            column.to_string_lossy()
        ))
    })
}

/// The OID of table `smsbus.<name>`.
pub(crate) fn smsbus_table(name: &CStr) -> pg_sys::Oid {
    // SAFETY: syscache lookups by name.
    let relid = unsafe {
        let schema = pg_sys::get_namespace_oid(c"smsbus".as_ptr(), false);
        pg_sys::get_relname_relid(name.as_ptr(), schema)
    };
    if relid == pg_sys::InvalidOid {
        crate::internal(format!(
            "smsbus.{} is missing: reinstall the extension",
            name.to_string_lossy()
        ));
    }
    relid
}

/// A row met by [`scan`].
pub(crate) struct Row {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl Row {
    /// Column `column` (0-based), which must be of type `T`.
    pub fn get<T: FromDatum>(&self, column: usize) -> Option<T> {
        // SAFETY: the tuple is the scan's current one, of this descriptor.
        unsafe {
            pgrx::heap_getattr_raw(self.tuple, NonZeroUsize::new(column + 1)?, self.desc)
                .and_then(|d| T::from_datum(d, false))
        }
    }
}

/// Which rows a scan sees.
#[derive(Clone, Copy)]
pub(crate) enum Snapshot {
    /// What the running statement sees.
    Statement,
    /// What an SQL statement started now would see: in READ COMMITTED,
    /// every commit so far.
    Latest,
}

/// Scans table `smsbus.<table>` for the rows whose text column `key`
/// equals `value` (every row when `key` is None), calling `visit` with
/// the column positions of `columns` and each row until it returns false.
pub(crate) fn scan<const N: usize>(
    table: &CStr,
    snapshot: Snapshot,
    columns: [&CStr; N],
    key: Option<(&CStr, &str)>,
    mut visit: impl FnMut(&[usize; N], &Row) -> bool,
) {
    let relid = smsbus_table(table);
    // SAFETY: a heap scan of an open relation under a registered snapshot,
    // ended before the snapshot is released and the relation closed; the
    // lock is kept to the end of the transaction, as a SELECT keeps it.
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::AccessShareLock as i32);
        let desc = (*rel).rd_att;
        let mut positions = [0; N];
        for (position, name) in positions.iter_mut().zip(columns) {
            *position = required_column(desc, table, name);
        }
        let mut keys: [pg_sys::ScanKeyData; 1] = std::mem::zeroed();
        let nkeys = match key {
            Some((column, value)) => {
                let attno = required_column(desc, table, column);
                // texteq: equality is the same under every deterministic
                // collation, and the scan reads the heap, not an index.
                pg_sys::ScanKeyInit(
                    keys.as_mut_ptr(),
                    (attno + 1) as pg_sys::AttrNumber,
                    pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                    pg_sys::Oid::from(pg_sys::F_TEXTEQ),
                    value.into_datum().unwrap_or(pg_sys::Datum::from(0)),
                );
                1
            }
            None => 0,
        };
        let snapshot = pg_sys::RegisterSnapshot(match snapshot {
            Snapshot::Statement if pg_sys::ActiveSnapshotSet() => pg_sys::GetActiveSnapshot(),
            _ => pg_sys::GetTransactionSnapshot(),
        });
        let scan = pg_sys::systable_beginscan(
            rel,
            pg_sys::InvalidOid,
            false,
            snapshot,
            nkeys,
            keys.as_mut_ptr(),
        );
        loop {
            let tuple = pg_sys::systable_getnext(scan);
            if tuple.is_null() || !visit(&positions, &Row { tuple, desc }) {
                break;
            }
        }
        pg_sys::systable_endscan(scan);
        pg_sys::UnregisterSnapshot(snapshot);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
    }
}

//! Inserting rows into a table from Rust without planning or starting an
//! executor for a statement: the path PostgreSQL's logical replication
//! applies rows by (`ExecSimpleRelationInsert`).
//!
//! The trace writes a row for every status change of every message, so the
//! few microseconds this takes instead of an SPI statement's start-up are
//! most of what a single-row INSERT into `smsbus.message` costs beyond the
//! row itself. Everything the table defines still applies: NOT NULL and
//! CHECK constraints, every index (unique, partial, expression), and row
//! triggers, BEFORE and AFTER. Privileges and row security are not checked:
//! callers write system tables as their owner.

use pgrx::pg_sys;
use pgrx::PgBox;

/// A table open for inserts during one statement.
pub(crate) struct Inserter {
    relation: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    result: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
}

impl Inserter {
    /// Opens `relid` with RowExclusiveLock (kept to the end of the
    /// transaction, as an INSERT keeps it) and its indexes.
    pub fn open(relid: pg_sys::Oid) -> Inserter {
        // SAFETY: the same steps as create_edata_for_relation() in
        // replication/logical/worker.c; every object lives in the executor
        // state's memory context or the relcache.
        unsafe {
            let relation = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as i32);
            let estate = pg_sys::CreateExecutorState();
            let mut rte =
                PgBox::<pg_sys::RangeTblEntry>::alloc_node(pg_sys::NodeTag::T_RangeTblEntry);
            rte.rtekind = pg_sys::RTEKind::RTE_RELATION;
            rte.relid = relid;
            rte.relkind = (*(*relation).rd_rel).relkind;
            rte.rellockmode = pg_sys::AccessShareLock as i32;
            let range_table = pg_sys::lappend(std::ptr::null_mut(), rte.into_pg().cast());
            pg_sys::ExecInitRangeTable(estate, range_table);
            let result =
                PgBox::<pg_sys::ResultRelInfo>::alloc_node(pg_sys::NodeTag::T_ResultRelInfo)
                    .into_pg();
            pg_sys::InitResultRelInfo(result, relation, 1, std::ptr::null_mut(), 0);
            // Registered as the executor's result relation, so the AFTER
            // row triggers find it instead of opening the table a second
            // time (a reference nobody closed: a relcache leak), and
            // ExecCloseResultRelations closes what this opened.
            (*estate).es_opened_result_relations =
                pg_sys::lappend((*estate).es_opened_result_relations, result.cast());
            (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::ExecOpenIndices(result, false);
            let slot = pg_sys::ExecInitExtraTupleSlot(
                estate,
                (*relation).rd_att,
                &raw const pg_sys::TTSOpsVirtual,
            );
            // Row triggers of the table queue their AFTER events here.
            pg_sys::AfterTriggerBeginQuery();
            Inserter {
                relation,
                estate,
                result,
                slot,
            }
        }
    }

    /// Whether the table has row triggers (which an insert here fires).
    pub fn has_triggers(&self) -> bool {
        // SAFETY: the relation is open.
        unsafe { !(*self.relation).trigdesc.is_null() }
    }

    pub fn descriptor(&self) -> pg_sys::TupleDesc {
        // SAFETY: the relation is open.
        unsafe { (*self.relation).rd_att }
    }

    /// Inserts one row: `values` for every column of the descriptor, None
    /// for NULL.
    pub fn insert(&mut self, values: &[Option<pg_sys::Datum>]) {
        // SAFETY: a virtual slot of the relation's descriptor; the datums
        // are of the columns' types (the caller's duty) and outlive the call.
        unsafe {
            let slot = self.slot;
            pg_sys::ExecClearTuple(slot);
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            assert_eq!(values.len(), natts, "one value per column");
            for (i, value) in values.iter().enumerate() {
                *(*slot).tts_values.add(i) = value.unwrap_or(pg_sys::Datum::from(0));
                *(*slot).tts_isnull.add(i) = value.is_none();
            }
            pg_sys::ExecStoreVirtualTuple(slot);
            pg_sys::ExecSimpleRelationInsert(self.result, self.estate, slot);
            // Per-row expression memory (index predicates, constraints).
            let context = (*self.estate).es_per_tuple_exprcontext;
            if !context.is_null() {
                pg_sys::MemoryContextReset((*context).ecxt_per_tuple_memory);
            }
        }
    }

    /// Fires the queued AFTER row triggers, closes the indexes and frees
    /// the executor state; the relation's lock stays to the end of the
    /// transaction.
    pub fn finish(self) {
        // SAFETY: undoes open(), as finish_edata() in worker.c does.
        unsafe {
            pg_sys::AfterTriggerEndQuery(self.estate);
            // The indexes, and any relation the triggers opened.
            pg_sys::ExecCloseResultRelations(self.estate);
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.relation, pg_sys::NoLock as i32);
        }
    }
}

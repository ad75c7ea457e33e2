//! Runs of rule conditions evaluated for the compiled router:
//! `smsbus._first_match(key, conditions, after, message)` (the position of
//! the first condition that holds) for blocking rules, and
//! `smsbus._route_first(key, conditions, channels, ids, message)` (the
//! routing verdict, failover included) for routes.
//!
//! The router runs every condition for every message it routes. Compiled
//! into PL/pgSQL, each condition reads the message's columns through
//! PL/pgSQL variables, a callback per column per condition, and PL/pgSQL
//! builds its expressions again in every transaction. Here a run is parsed,
//! planned and built once per backend (the key names it), kept across
//! transactions until smsbus.message changes, and evaluated on the message
//! row itself: the row is deformed once, and each column a condition reads
//! is a slot access.
//!
//! Only conditions built from PostgreSQL's own functions and operators over
//! the message's columns and constants are run here
//! ([`kind`] = `builtin`): those never change under a kept expression, and
//! they run the same as whichever role. Conditions that call user
//! functions, or hold subqueries, stay in PL/pgSQL, which follows changes
//! to what they call.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgBox;

use crate::channels::{self, Take};
use crate::rule_check;

/// What the compiled router can do with a (valid) condition.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// PostgreSQL's own functions and operators only: `_first_match`.
    Builtin,
    /// No subquery: one CASE expression in PL/pgSQL with its neighbours.
    Simple,
    /// A subquery: an IF of its own.
    Query,
}

/// `smsbus._condition_kind(condition)`: `builtin`, `simple` or `query`
/// (see [`Kind`]); `query` for a condition that does not analyse.
#[pg_extern(stable, parallel_safe)]
fn _condition_kind(condition: &str) -> &'static str {
    match rule_check::analysed(condition).map(|query| unsafe { kind(query) }) {
        Ok(Kind::Builtin) => "builtin",
        Ok(Kind::Simple) => "simple",
        _ => "query",
    }
}

/// The kind of an analysed condition.
///
/// # Safety
/// `query` is what [`rule_check::analysed`] returned.
unsafe fn kind(query: *mut pg_sys::Query) -> Kind {
    if (*query).hasSubLinks {
        return Kind::Query;
    }
    if not_builtin(condition_expr(query), std::ptr::null_mut()) {
        Kind::Simple
    } else {
        Kind::Builtin
    }
}

/// The condition's expression in its analysed `SELECT <condition>`.
unsafe fn condition_expr(query: *mut pg_sys::Query) -> *mut pg_sys::Node {
    let targets = rule_check::list_items((*query).targetList);
    (*targets[0].cast::<pg_sys::TargetEntry>())
        .expr
        .cast::<pg_sys::Node>()
}

/// Walker: true (stop) at anything but the message's columns, constants
/// and built-in functions and operators.
unsafe extern "C-unwind" fn not_builtin(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
    unsafe extern "C-unwind" fn user_function(function: pg_sys::Oid, _: *mut c_void) -> bool {
        function.to_u32() >= pg_sys::FirstNormalObjectId
    }
    if node.is_null() {
        return false;
    }
    if matches!(
        (*node).type_,
        pg_sys::NodeTag::T_Param
            | pg_sys::NodeTag::T_SubLink
            | pg_sys::NodeTag::T_SubPlan
            | pg_sys::NodeTag::T_Aggref
            | pg_sys::NodeTag::T_WindowFunc
            | pg_sys::NodeTag::T_GroupingFunc
            | pg_sys::NodeTag::T_NextValueExpr
            | pg_sys::NodeTag::T_CurrentOfExpr
            | pg_sys::NodeTag::T_CoerceToDomain
    ) {
        return true;
    }
    if pg_sys::check_functions_in_node(node, Some(user_function), std::ptr::null_mut()) {
        return true;
    }
    pg_sys::expression_tree_walker(node, Some(not_builtin), context)
}

/// A run's conditions, ready to evaluate.
struct Run {
    /// `CASE WHEN <1> THEN 1 WHEN <2> THEN 2 ... END`: the first pass, one
    /// expression, so one evaluation per message whatever the run's length.
    first: *mut pg_sys::ExprState,
    /// Each condition alone, for the passes after a match was skipped.
    conditions: Vec<*mut pg_sys::ExprState>,
    /// For a run of routes: each route's channel and id, read from the
    /// arguments at the first call (the key covers them).
    routes: Option<(Vec<String>, Vec<i64>)>,
}

/// Everything built for this backend, in one memory context.
struct Built {
    context: pg_sys::MemoryContext,
    row_type: pg_sys::Oid,
    slot: *mut pg_sys::TupleTableSlot,
    econtext: *mut pg_sys::ExprContext,
    runs: HashMap<i64, Run>,
    /// The descriptor of smsbus._routing, _route_first's result.
    routing: pg_sys::TupleDesc,
}

thread_local! {
    static BUILT: RefCell<Option<Built>> = const { RefCell::new(None) };
    /// Set by relation_changed: what was built may be stale.
    static STALE: Cell<bool> = const { Cell::new(false) };
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// The table whose rows the kept expressions read.
    static MESSAGE_RELATION: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
    /// The composite type smsbus._routing, whose descriptor is kept.
    static ROUTING_RELATION: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// Runs kept at most: rule changes leave the runs of older rules behind,
/// and past this many everything is built afresh.
const MAX_RUNS: usize = 1000;

unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // Only a flag: this may run while a kept expression is evaluated.
    if relid == pg_sys::InvalidOid
        || relid == MESSAGE_RELATION.get()
        || relid == ROUTING_RELATION.get()
    {
        STALE.set(true);
    }
}

/// Drops what was built if smsbus.message (whose columns the kept
/// expressions read) or smsbus._routing changed since, and watches for the
/// next change.
fn forget_if_stale() {
    if !WATCHING.get() {
        // SAFETY: registered once per backend.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(relation_changed), pg_sys::Datum::from(0));
        }
        WATCHING.set(true);
    }
    if STALE.replace(false) {
        if let Some(built) = BUILT.with(|b| b.borrow_mut().take()) {
            // SAFETY: nothing built is in use between calls.
            unsafe { pg_sys::MemoryContextDelete(built.context) };
        }
    }
}

/// Runs `f` with CurrentMemoryContext switched to `context`.
fn in_context<R>(context: pg_sys::MemoryContext, f: impl FnOnce() -> R) -> R {
    // SAFETY: switching and restoring the current memory context.
    unsafe {
        let old = pg_sys::CurrentMemoryContext;
        pg_sys::CurrentMemoryContext = context;
        let result = f();
        pg_sys::CurrentMemoryContext = old;
        result
    }
}

fn new_built(row_type: pg_sys::Oid) -> Built {
    // SAFETY: a context of our own under CacheMemoryContext, kept until an
    // invalidation; the descriptor, slot and expression context live in it.
    unsafe {
        let context = pg_sys::AllocSetContextCreateInternal(
            pg_sys::CacheMemoryContext,
            c"smsbus rule conditions".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        MESSAGE_RELATION.set(pg_sys::typeidTypeRelid(row_type));
        in_context(context, || {
            let desc = pg_sys::lookup_rowtype_tupdesc_copy(row_type, -1);
            Built {
                context,
                row_type,
                slot: pg_sys::MakeSingleTupleTableSlot(desc, &raw const pg_sys::TTSOpsHeapTuple),
                econtext: pg_sys::CreateStandaloneExprContext(),
                runs: HashMap::new(),
                routing: std::ptr::null_mut(),
            }
        })
    }
}

/// Parses, checks, plans and builds a run's conditions in `context`.
fn build_run(context: pg_sys::MemoryContext, conditions: &[String]) -> Run {
    in_context(context, || {
        let exprs: Vec<*mut pg_sys::Node> = conditions
            .iter()
            .map(|condition| {
                let query = rule_check::analysed(condition).unwrap_or_else(|e| {
                    rule_check::throw(e, condition, "rule condition");
                });
                // SAFETY: the Query analysis returned.
                unsafe {
                    if kind(query) != Kind::Builtin {
                        pgrx::error!(
                            "smsbus._first_match: condition is not built-in only: {condition}"
                        );
                    }
                    pg_sys::expression_planner(condition_expr(query).cast()).cast()
                }
            })
            .collect();
        // SAFETY: nodes built in `context`; each condition is boolean.
        unsafe {
            let position = |n: usize| {
                pg_sys::makeConst(
                    pg_sys::INT4OID,
                    -1,
                    pg_sys::InvalidOid,
                    4,
                    pg_sys::Datum::from(n as i32),
                    false,
                    true,
                )
                .cast::<pg_sys::Expr>()
            };
            let mut whens = std::ptr::null_mut();
            for (i, &expr) in exprs.iter().enumerate() {
                let mut when = PgBox::<pg_sys::CaseWhen>::alloc_node(pg_sys::NodeTag::T_CaseWhen);
                when.expr = expr.cast();
                when.result = position(i + 1);
                when.location = -1;
                whens = pg_sys::lappend(whens, when.into_pg().cast());
            }
            let mut case = PgBox::<pg_sys::CaseExpr>::alloc_node(pg_sys::NodeTag::T_CaseExpr);
            case.casetype = pg_sys::INT4OID;
            case.args = whens;
            case.defresult = pg_sys::makeNullConst(pg_sys::INT4OID, -1, pg_sys::InvalidOid).cast();
            case.location = -1;
            Run {
                first: pg_sys::ExecInitExpr(case.into_pg().cast(), std::ptr::null_mut()),
                conditions: exprs
                    .iter()
                    .map(|&e| pg_sys::ExecInitExpr(e.cast(), std::ptr::null_mut()))
                    .collect(),
                routes: None,
            }
        }
    })
}

/// A message row passed by value: the datum's tuple, read in place.
struct MessageRow {
    tuple: pg_sys::HeapTupleData,
    row_type: pg_sys::Oid,
}

impl MessageRow {
    /// # Safety
    /// `datum` is a non-null composite datum.
    unsafe fn of(datum: pg_sys::Datum) -> MessageRow {
        let header = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as pg_sys::HeapTupleHeader;
        MessageRow {
            tuple: pg_sys::HeapTupleData {
                // VARSIZE of the row's 4-byte varlena header.
                t_len: ((*header).t_choice.t_datum.datum_len_ as u32 >> 2) & 0x3FFF_FFFF,
                t_self: pg_sys::ItemPointerData::default(),
                t_tableOid: pg_sys::InvalidOid,
                t_data: header,
            },
            row_type: (*header).t_choice.t_datum.datum_typeid,
        }
    }
}

/// The kept descriptor of smsbus._routing, made in `context` when first
/// needed.
struct Routing<'a> {
    desc: &'a mut pg_sys::TupleDesc,
    context: pg_sys::MemoryContext,
}

/// Calls `f` with the run named `key`, built from the `conditions` datum
/// (a text[]) at its first use in this backend, and with the message row
/// stored for its conditions to read.
fn with_run<R>(
    key: i64,
    conditions: pg_sys::Datum,
    message: &mut MessageRow,
    f: impl FnOnce(&mut Run, Routing<'_>, &mut dyn FnMut(usize) -> Option<usize>) -> R,
) -> R {
    forget_if_stale();
    BUILT.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell
            .as_ref()
            .is_some_and(|b| b.row_type != message.row_type || b.runs.len() >= MAX_RUNS)
        {
            if let Some(old) = cell.take() {
                // SAFETY: nothing built is in use here.
                unsafe { pg_sys::MemoryContextDelete(old.context) };
            }
        }
        let built = cell.get_or_insert_with(|| new_built(message.row_type));
        if !built.runs.contains_key(&key) {
            // SAFETY: the caller's text[] argument.
            let conditions: Vec<String> = unsafe { Array::<&str>::from_datum(conditions, false) }
                .map(|a| a.iter().map(|c| c.unwrap_or("NULL").to_owned()).collect())
                .unwrap_or_default();
            let run = build_run(built.context, &conditions);
            built.runs.insert(key, run);
        }
        let (econtext, slot) = (built.econtext, built.slot);
        let run = built.runs.get_mut(&key).expect("built above");
        // SAFETY: the row outlives this call; the slot does not own it.
        unsafe {
            pg_sys::ExecStoreHeapTuple(&mut message.tuple, slot, false);
            (*econtext).ecxt_scantuple = slot;
        }
        let (first, conditions) = (run.first, run.conditions.as_ptr());
        let count = run.conditions.len();
        // SAFETY: `f` may set the run's routes, never its conditions.
        let mut next = |after: usize| {
            let conditions = unsafe { std::slice::from_raw_parts(conditions, count) };
            first_after(first, conditions, econtext, after)
        };
        let routing = Routing {
            desc: &mut built.routing,
            context: built.context,
        };
        let result = f(run, routing, &mut next);
        // SAFETY: per-message memory of our expression context.
        unsafe {
            pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
            pg_sys::ExecClearTuple(slot);
        }
        result
    })
}

/// The position (1-based) of the first condition of a run (`first`, their
/// CASE, or each of `conditions`) after position `after` that holds for
/// the row in the expression context.
fn first_after(
    first: *mut pg_sys::ExprState,
    conditions: &[*mut pg_sys::ExprState],
    econtext: *mut pg_sys::ExprContext,
    after: usize,
) -> Option<usize> {
    // SAFETY: expressions built for this row type, evaluated in the
    // per-message memory. An error in a condition (a division by zero)
    // unwinds through here as a Rust panic, releasing what the call holds.
    unsafe {
        let evaluate = |state: *mut pg_sys::ExprState| {
            let mut isnull = false;
            let evaluate = (*state).evalfunc.expect("an initialised expression");
            let value = evaluate(state, econtext, &mut isnull);
            (!isnull).then_some(value)
        };
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            let old = pg_sys::CurrentMemoryContext;
            pg_sys::CurrentMemoryContext = (*econtext).ecxt_per_tuple_memory;
            let found = if after == 0 {
                evaluate(first).map(|d| d.value())
            } else {
                conditions
                    .iter()
                    .enumerate()
                    .skip(after)
                    .find(|&(_, &state)| evaluate(state).is_some_and(|d| d.value() != 0))
                    .map(|(i, _)| i + 1)
            };
            pg_sys::CurrentMemoryContext = old;
            found
        })
    }
}

unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, i: usize) -> pg_sys::Datum {
    (*(*fcinfo).args.as_ptr().add(i)).value
}

/// V1 call convention for [`smsbus_first_match`].
#[no_mangle]
pub extern "C" fn pg_finfo_smsbus_first_match() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `smsbus._first_match(key bigint, conditions text[], after integer,
/// message smsbus.message) RETURNS integer`, STRICT: the position (1-based)
/// of the first of `conditions` after position `after` that holds for
/// `message`. `key` names the run: the compiled router passes the same
/// conditions with the same key, so they are built at its first call.
/// Written against the raw call convention so the message row is read in
/// place, not converted.
///
/// # Safety
/// Called by PostgreSQL through fmgr with four non-null arguments.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn smsbus_first_match(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let key = arg(fcinfo, 0).value() as i64;
    let after = usize::try_from(arg(fcinfo, 2).value() as i32).unwrap_or(0);
    let mut message = MessageRow::of(arg(fcinfo, 3));
    match with_run(key, arg(fcinfo, 1), &mut message, |_, _, next| next(after)) {
        Some(position) => pg_sys::Datum::from(position as i32),
        None => {
            (*fcinfo).isnull = true;
            pg_sys::Datum::from(0)
        }
    }
}

/// V1 call convention for [`smsbus_route_first`].
#[no_mangle]
pub extern "C" fn pg_finfo_smsbus_route_first() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `smsbus._route_first(key bigint, conditions text[], channels text[],
/// ids bigint[], message smsbus.message) RETURNS smsbus._routing`, STRICT:
/// a run of routes, each with its channel, in position order. The first
/// whose condition holds and whose channel can take the message (quota
/// taken) decides: ('queued', channel, 'route <id>', NULL). Else (NULL or
/// 'dailylimit' when a match was over its limit, NULL, NULL, why each match
/// was skipped, or NULL when none matched).
///
/// # Safety
/// Called by PostgreSQL through fmgr with five non-null arguments.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn smsbus_route_first(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let mut message = MessageRow::of(arg(fcinfo, 4));
    route_run(fcinfo, [0, 1, 2, 3].map(|i| arg(fcinfo, i)), &mut message)
}

/// What the router decided: status, channel, routed_by, reason.
type Verdict = [Option<String>; 4];

/// The verdict of a run of routes given as (key, conditions, channels,
/// ids), as a smsbus._routing datum.
unsafe fn route_run(
    fcinfo: pg_sys::FunctionCallInfo,
    [key, conditions, channels, ids]: [pg_sys::Datum; 4],
    message: &mut MessageRow,
) -> pg_sys::Datum {
    with_run(
        key.value() as i64,
        conditions,
        message,
        |run, routing, next| {
            let (channels, ids) = run.routes.get_or_insert_with(|| {
                let channels = Array::<&str>::from_datum(channels, false);
                let ids = Array::<i64>::from_datum(ids, false);
                let (Some(channels), Some(ids)) = (channels, ids) else {
                    pgrx::error!("smsbus._route_first: channels and ids are required");
                };
                (
                    channels
                        .iter()
                        .map(|c| c.unwrap_or_default().to_owned())
                        .collect(),
                    ids.iter().map(Option::unwrap_or_default).collect(),
                )
            });
            let (mut skipped, mut over_limit) = (Vec::new(), false);
            let mut after = 0;
            let mut verdict = None;
            while let Some(position) = next(after) {
                let channel = channels.get(position - 1).map_or("", String::as_str);
                let route = format!(
                    "route {}",
                    ids.get(position - 1).copied().unwrap_or_default()
                );
                match channels::take(channel) {
                    Take::Taken => {
                        verdict = Some([
                            Some("queued".to_owned()),
                            Some(channel.to_owned()),
                            Some(route),
                            None,
                        ]);
                        break;
                    }
                    take => {
                        over_limit |= take == Take::OverDailyLimit;
                        skipped.push(format!(
                            "{route}: {}",
                            take.reason(channel).unwrap_or_default()
                        ));
                    }
                }
                after = position;
            }
            let verdict = verdict.unwrap_or_else(|| {
                let reason = (!skipped.is_empty()).then(|| skipped.join("; "));
                [
                    over_limit.then(|| "dailylimit".to_owned()),
                    None,
                    None,
                    reason,
                ]
            });
            routing_datum(fcinfo, routing, verdict)
        },
    )
}

/// `verdict` as a smsbus._routing datum, the result type of the function
/// `fcinfo` calls.
unsafe fn routing_datum(
    fcinfo: pg_sys::FunctionCallInfo,
    routing: Routing<'_>,
    verdict: Verdict,
) -> pg_sys::Datum {
    if routing.desc.is_null() {
        // Once per backend: the descriptor is kept with what was built.
        let mut desc: pg_sys::TupleDesc = std::ptr::null_mut();
        if pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut desc)
            != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE
        {
            pgrx::error!("smsbus's route runs must return smsbus._routing");
        }
        ROUTING_RELATION.set(pg_sys::typeidTypeRelid((*desc).tdtypeid));
        *routing.desc = in_context(routing.context, || pg_sys::CreateTupleDescCopy(desc));
    }
    let values = verdict.map(IntoDatum::into_datum);
    let mut nulls = values.map(|v| v.is_none());
    let mut datums = values.map(|v| v.unwrap_or(pg_sys::Datum::from(0)));
    let tuple = pg_sys::heap_form_tuple(*routing.desc, datums.as_mut_ptr(), nulls.as_mut_ptr());
    pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
}

/// V1 call convention for [`smsbus_block_route_first`].
#[no_mangle]
pub extern "C" fn pg_finfo_smsbus_block_route_first() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `smsbus._block_route_first(block_key bigint, block_conditions text[],
/// block_ids bigint[], block_reasons text[], key bigint, conditions text[],
/// channels text[], ids bigint[], message smsbus.message) RETURNS
/// smsbus._routing`, STRICT: a router whose blocking rules are one run and
/// whose first routes are another, in one call: ('blocked', NULL,
/// 'block <id>', reason) for the first blocking rule that holds, else what
/// `_route_first` answers for the routes.
///
/// # Safety
/// Called by PostgreSQL through fmgr with nine non-null arguments.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn smsbus_block_route_first(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let mut message = MessageRow::of(arg(fcinfo, 8));
    let (ids, reasons) = (arg(fcinfo, 2), arg(fcinfo, 3));
    let blocked = with_run(
        arg(fcinfo, 0).value() as i64,
        arg(fcinfo, 1),
        &mut message,
        |_, routing, next| {
            let position = next(0)?;
            let id = Array::<i64>::from_datum(ids, false)
                .and_then(|a| a.get(position - 1).flatten())
                .unwrap_or_default();
            let reason = Array::<&str>::from_datum(reasons, false)
                .and_then(|a| a.get(position - 1).flatten().map(str::to_owned));
            Some(routing_datum(
                fcinfo,
                routing,
                [
                    Some("blocked".to_owned()),
                    None,
                    Some(format!("block {id}")),
                    reason,
                ],
            ))
        },
    );
    blocked.unwrap_or_else(|| route_run(fcinfo, [4, 5, 6, 7].map(|i| arg(fcinfo, i)), &mut message))
}

//! Configuration parameters (`SET smsbus.max_segments = 6`, or per database
//! with `ALTER DATABASE ... SET`).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// The most parts one message may be cut into; a longer body is refused at
/// INSERT rather than silently costing dozens of SMS.
pub static MAX_SEGMENTS: GucSetting<i32> = GucSetting::<i32>::new(10);

/// On while a dump is restored: the queue's triggers keep each row as it
/// was dumped (its status, timestamps and trace came with it) instead of
/// validating and routing it as a new message. Superusers only: it lets
/// an INSERT skip the blocking rules.
pub static RESTORING: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Who the trace names for the changes a session makes (the worker sets
/// `worker:<id>`); unset, the current role. Superusers and smsbus_worker
/// only (`GRANT SET ON PARAMETER` in sql/privileges.sql): anyone else could write
/// another actor into the trace.
pub static ACTOR: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);

pub fn register() {
    GucRegistry::define_bool_guc(
        c"smsbus.restoring",
        c"Keep restored smsbus.message rows as they were dumped.",
        c"Set it for pg_restore (PGOPTIONS='-c smsbus.restoring=on'); off otherwise.",
        &RESTORING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"smsbus.max_segments",
        c"Most segments one outbound message may need.",
        c"An INSERT whose body needs more parts than this is refused.",
        &MAX_SEGMENTS,
        1,
        255,
        // A sender may not raise its own cap: set it per database or role
        // (ALTER DATABASE/ROLE ... SET) as a superuser.
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"smsbus.actor",
        c"Who the trace names for this session's changes.",
        c"The worker sets worker:<id>; unset, the current role.",
        &ACTOR,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// `smsbus._restoring()`: whether a dump is being restored, for the
/// triggers written in SQL (calling it loads this library, which turns a
/// `-c smsbus.restoring=on` given before CREATE EXTENSION into the setting).
#[pgrx::pg_extern(stable, parallel_safe)]
fn _restoring() -> bool {
    RESTORING.get()
}

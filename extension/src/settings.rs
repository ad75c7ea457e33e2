//! Configuration parameters (`SET smsbus.max_segments = 6`, or per database
//! with `ALTER DATABASE ... SET`).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// The most parts one message may be cut into; a longer body is refused at
/// INSERT rather than silently costing dozens of SMS.
pub static MAX_SEGMENTS: GucSetting<i32> = GucSetting::<i32>::new(10);

pub fn register() {
    GucRegistry::define_int_guc(
        c"smsbus.max_segments",
        c"Most segments one outbound message may need.",
        c"An INSERT whose body needs more parts than this is refused.",
        &MAX_SEGMENTS,
        1,
        255,
        GucContext::Userset,
        GucFlags::default(),
    );
}

//! How a worker names itself to the database: in its connections'
//! `application_name`, `smsbus-worker <role> <worker id>`.
//!
//! The trace names the worker behind each change (`worker:<id>`). A
//! startup `options` parameter (`-c smsbus.actor=...`) would carry it too,
//! but PgBouncer before 1.20 refuses that parameter, and in transaction
//! pooling no session setting follows the client from one server
//! connection to the next. `application_name` does: PgBouncer tracks it
//! per client and sets it on whichever server connection it lends. The
//! extension believes it only from a member of `smsbus_worker`, who may
//! set `smsbus.actor` anyway.

/// What every worker connection's `application_name` starts with.
const PREFIX: &str = "smsbus-worker ";

/// PostgreSQL keeps at most this many bytes of `application_name`
/// (NAMEDATALEN - 1) and replaces what is not printable ASCII with `?`.
pub const APPLICATION_NAME_MAX: usize = 63;

/// The `application_name` of a worker's connection: `role` is one word
/// (`pool`, `listener`, `owner`, `check`), shown in `pg_stat_activity`.
pub fn application_name(role: &str, worker_id: &str) -> String {
    debug_assert!(!role.contains(' '), "a role is one word");
    format!("{PREFIX}{role} {worker_id}")
}

/// The trace's actor for a connection with this `application_name`, when
/// a worker named itself there: `worker:<id>`.
pub fn actor_of(application_name: &str) -> Option<String> {
    let (_role, worker_id) = application_name.strip_prefix(PREFIX)?.split_once(' ')?;
    (!worker_id.is_empty()).then(|| format!("worker:{worker_id}"))
}

/// Whether a worker id reaches the database whole in every role's
/// `application_name`: printable ASCII, short enough.
pub fn fits(worker_id: &str) -> bool {
    worker_id.bytes().all(|b| (0x20..0x7f).contains(&b))
        && application_name("listener", worker_id).len() <= APPLICATION_NAME_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_id_goes_there_and_back() {
        for id in ["w1", "db-host.example:4711", "a b"] {
            let name = application_name("pool", id);
            assert_eq!(actor_of(&name), Some(format!("worker:{id}")));
        }
    }

    #[test]
    fn other_application_names_name_no_worker() {
        for name in [
            "",
            "psql",
            "smsbus-worker",
            "smsbus-worker pool",
            "smsbus-worker pool ",
            "smsbus-workerpool w1",
            " smsbus-worker pool w1",
        ] {
            assert_eq!(actor_of(name), None, "{name:?}");
        }
    }

    #[test]
    fn ids_that_postgresql_would_cut_or_mangle_do_not_fit() {
        assert!(fits("host-1:4242"));
        assert!(!fits(&"x".repeat(41)));
        assert!(fits(
            &"x".repeat(APPLICATION_NAME_MAX - "smsbus-worker listener ".len())
        ));
        assert!(!fits("wörker"));
        assert!(!fits("w\t1"));
    }
}

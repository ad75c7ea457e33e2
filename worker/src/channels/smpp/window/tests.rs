//! The window's decisions, driven by hand: no socket, no runtime.

use super::*;

fn window(size: usize) -> Window<&'static str> {
    Window::new(size, UnknownOutcome::Retry)
}

fn pdus(parts: usize) -> Vec<SubmitSm> {
    vec![SubmitSm::default(); parts]
}

/// Writes every ready part; their sequence numbers.
fn write_all(w: &mut Window<&'static str>, now: Instant) -> Vec<u32> {
    std::iter::from_fn(|| w.next_part(now).map(|p| p.sequence)).collect()
}

fn sent(decided: Option<Decided<&'static str>>) -> (&'static str, Vec<String>, usize) {
    match decided {
        Some(Decided {
            claimed,
            outcome: Outcome::Sent { references },
            taken,
        }) => (claimed, references, taken),
        other => panic!("not sent: {other:?}"),
    }
}

#[test]
fn a_message_is_sent_once_every_part_is_accepted() {
    let now = Instant::now();
    let mut w = window(10);
    w.hold(1, "m1", pdus(2));
    let sequences = write_all(&mut w, now);
    assert_eq!(sequences, [1, 2]);
    assert_eq!(w.in_window(), 2);
    // Answers may come in any order; references keep the parts' order.
    match w.answered(2, CommandStatus::EsmeRok, || "b".into()) {
        Answered::Accepted { decided: None } => {}
        other => panic!("decided too early: {other:?}"),
    }
    let Answered::Accepted { decided } = w.answered(1, CommandStatus::EsmeRok, || "a".into())
    else {
        panic!("not accepted");
    };
    assert_eq!(
        sent(decided),
        ("m1", vec!["a".to_owned(), "b".to_owned()], 2)
    );
    assert_eq!(w.in_window(), 0);
    assert!(w.nothing_outstanding());
}

#[test]
fn parts_count_in_the_window_until_their_outcome_is_committed() {
    let now = Instant::now();
    let mut w = window(2);
    w.hold(1, "m1", pdus(2));
    write_all(&mut w, now);
    assert!(!w.is_free());
    w.answered(1, CommandStatus::EsmeRok, || "a".into());
    let Answered::Accepted { decided } = w.answered(2, CommandStatus::EsmeRok, || "b".into())
    else {
        panic!("not accepted");
    };
    let (_, _, taken) = sent(decided);
    w.unrecorded(7, taken);
    assert_eq!(w.in_window(), 2, "answered, not committed");
    assert!(!w.is_free());
    w.forget_recorded(6);
    assert!(w.has_unrecorded());
    w.forget_recorded(7);
    assert!(!w.has_unrecorded());
    assert!(w.is_free());
}

#[test]
fn nothing_unrecorded_for_an_outcome_never_numbered_or_nothing_taken() {
    let mut w = window(1);
    w.unrecorded(0, 3);
    w.unrecorded(5, 0);
    assert!(!w.has_unrecorded());
}

#[test]
fn a_throttled_part_is_written_again_first() {
    let now = Instant::now();
    let mut w = window(10);
    w.hold(1, "m1", pdus(1));
    w.hold(2, "m2", pdus(1));
    let first = w.next_part(now).unwrap().sequence;
    assert!(matches!(
        w.answered(first, CommandStatus::EsmeRthrottled, || unreachable!()),
        Answered::Throttled
    ));
    let again = w.next_part(now).unwrap();
    assert_eq!(*again.claimed, "m1");
    assert!(!again.first_of_message);
    assert_eq!(*w.next_part(now).unwrap().claimed, "m2");
}

#[test]
fn a_refused_part_fails_its_message_and_drops_its_other_parts() {
    let now = Instant::now();
    let mut w = window(10);
    w.hold(1, "m1", pdus(3));
    let first = w.next_part(now).unwrap().sequence;
    let Answered::Refused(decided) =
        w.answered(first, CommandStatus::EsmeRinvdstadr, || unreachable!())
    else {
        panic!("not refused");
    };
    match decided.outcome {
        Outcome::Failed { error } => {
            assert_eq!(
                error,
                "submit_sm refused: ESME_RINVDSTADR (0x0000000B) (part 1 of 3)"
            )
        }
        other => panic!("not failed: {other:?}"),
    }
    assert_eq!(decided.taken, 0);
    assert!(!w.has_ready(), "the other parts are not written");
}

#[test]
fn an_answer_to_a_decided_message_or_to_nothing_is_unmatched() {
    let now = Instant::now();
    let mut w = window(10);
    w.hold(1, "m1", pdus(2));
    let sequences = write_all(&mut w, now);
    w.answered(sequences[0], CommandStatus::EsmeRsyserr, || unreachable!());
    assert!(matches!(
        w.answered(sequences[1], CommandStatus::EsmeRok, || "x".into()),
        Answered::Unmatched
    ));
    assert!(matches!(
        w.answered(99, CommandStatus::EsmeRok, || "x".into()),
        Answered::Unmatched
    ));
}

#[test]
fn late_answers_make_the_outcome_unknown_and_a_late_enquire_link_kills_the_link() {
    let start = Instant::now();
    let timeout = Duration::from_secs(10);
    let mut w = window(10);
    w.hold(1, "m1", pdus(1));
    write_all(&mut w, start);
    w.enquire_link(start + Duration::from_secs(5));
    let expired = w.expire(start + Duration::from_secs(11), timeout);
    assert!(!expired.enquire_link, "the enquire_link is not late yet");
    let [decided] = &expired.decided[..] else {
        panic!("one message expected: {expired:?}");
    };
    assert_eq!(decided.taken, 1, "the provider may have it");
    match &decided.outcome {
        Outcome::Retry { error, delay } => {
            assert_eq!(
                error,
                "outcome unknown: no submit_sm_resp within 10s; the message may have been sent"
            );
            assert_eq!(*delay, UNKNOWN_RETRY_DELAY);
        }
        other => panic!("not retried: {other:?}"),
    }
    let expired = w.expire(start + Duration::from_secs(16), timeout);
    assert!(expired.enquire_link);
    assert!(expired.decided.is_empty());
}

#[test]
fn an_unreadable_answer_makes_the_outcome_unknown() {
    let mut w: Window<&str> = Window::new(10, UnknownOutcome::Fail);
    w.hold(1, "m1", pdus(1));
    let sequence = w.next_part(Instant::now()).unwrap().sequence;
    let decided = w.unreadable_answer(sequence, "truncated").unwrap();
    match decided.outcome {
        Outcome::Failed { error } => assert_eq!(
            error,
            "outcome unknown: unreadable submit_sm_resp (truncated); the message may have been sent"
        ),
        other => panic!("not failed: {other:?}"),
    }
    assert!(w.unreadable_answer(sequence, "again").is_none());
}

#[test]
fn a_stop_hands_back_only_what_was_never_written() {
    let now = Instant::now();
    let mut w = window(1);
    w.hold(1, "written", pdus(1));
    w.hold(2, "waiting", pdus(1));
    w.next_part(now).unwrap();
    let released = w.release_unwritten();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].claimed, "waiting");
    assert!(matches!(released[0].outcome, Outcome::Release));
    assert!(!w.has_ready());
    assert_eq!(
        w.in_window(),
        1,
        "the written one still waits for its answer"
    );
}

#[test]
fn a_lost_link_settles_everything_and_keeps_what_is_unrecorded() {
    let now = Instant::now();
    let mut w = window(10);
    w.hold(1, "written", pdus(1));
    w.hold(2, "waiting", pdus(1));
    w.next_part(now).unwrap();
    w.unrecorded(3, 2);
    let mut settled = w.settle_all();
    settled.sort_by_key(|d| d.claimed);
    assert_eq!(settled[0].claimed, "waiting");
    assert!(matches!(settled[0].outcome, Outcome::Release));
    assert_eq!(settled[1].claimed, "written");
    assert_eq!(settled[1].taken, 1);
    assert!(matches!(settled[1].outcome, Outcome::Retry { .. }));
    assert!(w.nothing_outstanding());
    assert_eq!(w.in_window(), 2, "the unrecorded outcome still counts");
    assert_eq!(w.sequence(), 1, "a new link numbers from 1");
}

#[test]
fn sequence_numbers_wrap_to_one() {
    let mut w = window(1);
    w.next_sequence = 0x7FFF_FFFE;
    assert_eq!(w.sequence(), 0x7FFF_FFFF);
    assert_eq!(w.sequence(), 1);
}

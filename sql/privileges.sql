-- smsbus privileges, last: every file grants its own functions to the
-- roles that call them; here EXECUTE is taken from PUBLIC for every
-- function but the few meant for everyone (PostgreSQL grants it by
-- default), and the worker may name itself in the trace.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA smsbus FROM PUBLIC;
-- Helpers anyone may call; the triggers call some as the inserting role.
GRANT EXECUTE ON FUNCTION sms_encoding(text), sms_segments(text, text), status_is_permanent(text), _restoring(),
    _in_extension_script(), _actor(), _actor_login()
    TO PUBLIC;
-- The worker names itself in the trace; no one else may claim a name.
GRANT SET ON PARAMETER smsbus.actor TO smsbus_worker;

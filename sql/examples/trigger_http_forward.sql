-- Forward every inbound message to a web service, as JSON, with a Lua
-- trigger. The endpoint (and an optional bearer token) is a row, so it
-- changes without touching the script. An answer other than 2xx, or no
-- answer at all, fails the message's triggers with the reason in
-- last_error; once the service is back, send them again with
--
--   UPDATE smsbus.message SET trigger_status = 'pending'
--   WHERE direction = 'in' AND trigger_status = 'failed';

CREATE TABLE IF NOT EXISTS http_forward (
    endpoint text NOT NULL,  -- e.g. https://example.com/sms/inbound
    token    text            -- sent as "Authorization: Bearer <token>"
);
GRANT SELECT ON http_forward TO smsbus_worker;
GRANT ALL ON http_forward TO smsbus_admin;

INSERT INTO smsbus.trigger (name, position, on_status, direction, language, script, description)
VALUES ('forward-inbound', 20, '{received}', 'in', 'lua', $lua$
function process(message)
    local target = smsbus.query("SELECT endpoint, token FROM http_forward LIMIT 1")[1]
    if not target then
        error("no endpoint: INSERT INTO http_forward (endpoint) VALUES ('https://...')")
    end
    -- The database writes the JSON.
    local json = smsbus.query([[
        SELECT jsonb_build_object('id', id, 'from', from_address, 'to', to_address, 'body', body,
                                  'channel', channel, 'received_at', received_at)::text AS text
        FROM smsbus.message WHERE id = $1]], message.id)[1].text
    local answer = smsbus.http{
        method = "POST",
        url = target.endpoint,
        headers = {
            ["Content-Type"] = "application/json",
            ["Authorization"] = target.token and ("Bearer " .. target.token) or nil,
        },
        body = json,
        timeout = 5,
    }
    if answer.status < 200 or answer.status > 299 then
        error(("%s answered %d: %s"):format(target.endpoint, answer.status, answer.body:sub(1, 200)))
    end
    local custom = message.custom or {}
    custom.forwarded = answer.status
    message.custom = custom
end
$lua$, 'inbound messages to a web service, as JSON');

-- Homeflex: one log line per refused client, at level "warn" and starting with
-- "homeflex-refused", for homeflex.cloud.xmpp.prosody to turn into security events.
-- Prosody itself logs these refusals only at debug level, if at all.

local function refused(session, kind, detail)
	module:log("warn", "homeflex-refused %s ip=%s %s", kind, tostring(session.ip), detail);
end

-- a wrong password or unknown account (mod_saslauth fires this on every failed SASL exchange)
module:hook("authentication-failure", function(event)
	local session = event.session;
	local user = session.sasl_handler and session.sasl_handler.username or "?";
	refused(session, "xmpp-auth-failed", ("user=%s condition=%s"):format(
		tostring(user), tostring(event.condition)));
end);

-- a client offering a password before STARTTLS (mod_saslauth answers encryption-required)
module:hook("stanza/urn:ietf:params:xml:ns:xmpp-sasl:auth", function(event)
	local session = event.origin;
	if session.type == "c2s_unauthed" and not session.secure then
		refused(session, "xmpp-no-tls", ("mechanism=%s"):format(tostring(event.stanza.attr.mechanism)));
	end
end, 10); -- before mod_saslauth (priority 0), which answers and stops the event

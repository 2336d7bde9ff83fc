-- mod_pushrules: the Prosody adapter of pushrules (https://…/pushrules, runtime/prosody/).
--
-- Thin on purpose: it raises the server-event contract's events (shared spec, events.md) from
-- Prosody's hooks, answers XEP-0357 <enable/>/<disable/> once the sidecar has the event, and
-- sends the publishes the sidecar decided from this host. It decides no push: every rule lives in
-- pushrules' model. Talks JSON lines over a Unix socket to `pushrules serve --prosody PATH`.
--
-- Config (VirtualHost or global):
--   pushrules_socket = "/run/pushrules/prosody.sock"   -- required
--   pushrules_shadow = false         -- true: mod_cloud_notify keeps answering and sending;
--                                    -- pushrules only decides and logs where it differs
--   pushrules_buffer_size = 10000    -- events kept while the sidecar is unreachable/unacked
--   pushrules_reconnect_interval = 1 -- seconds between connection attempts
--   pushrules_ack_timeout = 10       -- seconds an <enable/>/<disable/> waits for the sidecar
--   pushrules_iq_timeout = 10        -- default publish timeout (the sidecar may send its own)
--   pushrules_shadow_window = 10     -- seconds the sidecar waits to match both sides' pushes
--   pushrules_contract_version = 2   -- 2: also raise the contract's version-2 events
--                                    -- (message/bare/groupchat, csi-state, chat-settings,
--                                    -- push-remote-disable) and an "at" time on every event;
--                                    -- 1: version-1 events only (an engine older than v2)
--   (pushrules_contract_v2 = false, the option's name before version 2 became the default,
--    still means version 1)
--
-- Wire (one JSON object a line). Module -> sidecar:
--   {"kind":"hello","host":…,"boot":…,"shadow":bool,"shadow_window":S,"version":1}
--   {"kind":"event","seq":N,"reply":bool,"event":{contract event}}
--   {"kind":"answer","id":…,"ok":bool,"error_type":…,"condition":…,"timeout":bool}
--   {"kind":"observed","seq":N,"user":…,"jid":…,"node":…,"stanza":id,"important":bool}
--       (shadow mode: a push mod_cloud_notify sent; numbered and kept like events)
-- Sidecar -> module:
--   {"kind":"ack","upto":N}                       events up to N are applied: forget them
--   {"kind":"applied","seq":N,"ok":bool,"error":…} for an event sent with "reply": the IQ answer
--   {"kind":"publish","id":…,"iq":"<iq …/>","timeout":S}  send from this host, answer with "answer"
--   {"kind":"pause"} / {"kind":"resume"}          flow control: while paused, numbered lines
--       are only kept (the bounded buffer), and written at "resume"; answers are still written

local json = require "util.json";
local array = require "util.array";
local st = require "util.stanza";
local jid_util = require "util.jid";
local xml = require "util.xml";
local uuid = require "util.uuid";
local filters = require "util.filters";
local server = require "net.server";

local time_now = require "util.time".now;

local have_unix, unix = pcall(require, "socket.unix");
if have_unix and type(unix) == "function" then unix = { stream = unix }; end -- older LuaSocket
if not have_unix or type(unix) ~= "table" then
	module:log_status("error", "LuaSocket Unix socket support is missing (lua-socket >= 3)");
	return;
end

local host = module.host;
local socket_path = module:get_option_string("pushrules_socket");
local shadow = module:get_option_boolean("pushrules_shadow", false);
local buffer_size = module:get_option_number("pushrules_buffer_size", 10000);
local reconnect_interval = module:get_option_number("pushrules_reconnect_interval", 1);
local ack_timeout = module:get_option_number("pushrules_ack_timeout", 10);
local default_iq_timeout = module:get_option_number("pushrules_iq_timeout", 10);
local shadow_window = module:get_option_number("pushrules_shadow_window", 10);
local contract_version = module:get_option_number("pushrules_contract_version",
	module:get_option_boolean("pushrules_contract_v2", true) and 2 or 1);
if contract_version ~= 1 and contract_version ~= 2 then
	module:log_status("error", "pushrules_contract_version must be 1 or 2, not %s", tostring(contract_version));
	return;
end
local contract_v2 = contract_version == 2;

if not socket_path then
	module:log_status("error", "pushrules_socket is not set: where does `pushrules serve --prosody PATH` listen?");
	return;
end

local xmlns_push = "urn:xmpp:push:0";
local xmlns_data = "jabber:x:data";
local boot = uuid.generate(); -- names this run of the module: the sidecar's replay guard

-- --- connection and the bounded buffer --------------------------------------------------------
-- pending holds the events not yet acknowledged by the sidecar, oldest first (seq, line): written
-- at once while connected, written again after a reconnection. Full: a new event is still written
-- when connected (just not kept), otherwise dropped and counted in the log.
local conn, connected = nil, false;
local paused, written = false, 0; -- the sidecar's flow control; the last seq written
local pending, pending_head, pending_tail = {}, 1, 0;
local seq = 0;
local dropped, dropped_logged = 0, 0;
local waiters = {}; -- seq -> { reply = function(ok, err), deadline = time }
local unreachable_since = nil;
local partial = "";

local function write_line(obj)
	if not connected then return false; end
	return conn:write(json.encode(obj) .. "\n");
end

local function keep(entry)
	if pending_tail - pending_head + 1 >= buffer_size then return false; end
	pending_tail = pending_tail + 1;
	pending[pending_tail] = entry;
	return true;
end

local function forget_upto(n)
	while pending_head <= pending_tail and pending[pending_head].seq <= n do
		pending[pending_head] = nil;
		pending_head = pending_head + 1;
	end
end

local function count_drop()
	dropped = dropped + 1;
	if dropped == 1 or dropped - dropped_logged >= 1000 then
		module:log("warn", "pushrules sidecar unreachable and buffer full (%d events): %d event(s) dropped so far",
			buffer_size, dropped);
		dropped_logged = dropped;
	end
end

-- Send one numbered line (kept until acknowledged, like every event).
local function send_numbered(message)
	seq = seq + 1;
	message.seq = seq;
	local entry = { seq = seq, line = json.encode(message) };
	local kept = keep(entry);
	if connected and not paused then
		conn:write(entry.line .. "\n");
		written = seq;
	elseif not kept then
		count_drop();
	end
	return seq;
end

-- Raise one contract event. `reply` (optional) is called with (ok, error_text) once the sidecar
-- has applied it, or with (false, why) when it cannot be reached in time.
local last_at = 0;
local function emit(event, reply)
	if reply and not connected then reply(false, "push service unreachable"); return; end
	if contract_v2 then
		-- The server's clock in seconds; never earlier than the event before (a clock step back).
		last_at = math.max(last_at, time_now());
		event.at = last_at;
	end
	local n = send_numbered({ kind = "event", reply = reply ~= nil, event = event });
	if reply then waiters[n] = { reply = reply, deadline = os.time() + ack_timeout }; end
end

-- The stanza's XML as the session receives it (Prosody leaves jabber:client implicit).
local function stanza_xml(stanza)
	local text = tostring(stanza);
	if stanza.attr.xmlns == nil then
		text = "<" .. stanza.name .. " xmlns='jabber:client'" .. text:sub(#stanza.name + 2);
	end
	return text;
end

local function queue_xml(queue)
	local out = array();
	for _, stanza in ipairs(queue or {}) do out:push(stanza_xml(stanza)); end
	return out;
end

-- --- publishes decided by the sidecar ----------------------------------------------------------
local function answer_error(id, err)
	local error_type, condition = err and err.type, err and err.condition;
	-- The error as the app server wrote it: a typeless <error/> must stay typeless.
	local answered = err and err.context and err.context.stanza;
	if answered then error_type, condition = answered:get_error(); end
	local timed_out = not answered and condition == "remote-server-timeout" and err.text == "IQ stanza timed out";
	write_line({ kind = "answer", id = id, ok = false, error_type = error_type or json.null,
		condition = condition or json.null, timeout = timed_out });
end

local function handle_publish(msg)
	local iq, err = xml.parse(msg.iq or "");
	if not iq or iq.name ~= "iq" or iq.attr.type ~= "set" or not iq:get_child("pubsub", "http://jabber.org/protocol/pubsub") then
		module:log("error", "pushrules sidecar sent an invalid publish %s: %s", tostring(msg.id), tostring(err or "not an iq set with <pubsub/>"));
		write_line({ kind = "answer", id = msg.id, ok = false, error_type = "modify", condition = "bad-request", timeout = false });
		return;
	end
	iq.attr.xmlns = nil;
	iq.attr.from = host; -- app servers see the user's host, as with mod_cloud_notify
	iq.attr.id = "pushrules-" .. uuid.generate();
	module:send_iq(iq, nil, tonumber(msg.timeout) or default_iq_timeout):next(function ()
		write_line({ kind = "answer", id = msg.id, ok = true });
	end, function (e)
		answer_error(msg.id, e);
	end);
end

local handlers = {};
function handlers.ack(msg) forget_upto(tonumber(msg.upto) or 0); end
function handlers.applied(msg)
	local n = tonumber(msg.seq);
	local waiter = n and waiters[n];
	if waiter then waiters[n] = nil; waiter.reply(msg.ok == true, msg.error); end
end
handlers.publish = handle_publish;
function handlers.pause() paused = true; end
function handlers.resume()
	paused = false;
	for i = pending_head, pending_tail do
		local entry = pending[i];
		if entry.seq > written then conn:write(entry.line .. "\n"); written = entry.seq; end
	end
end

local function on_line(line)
	if line == "" then return; end
	local msg = json.decode(line);
	local handler = type(msg) == "table" and handlers[msg.kind];
	if not handler then
		module:log("error", "pushrules sidecar sent a line this module does not understand: %.200s", line);
		return;
	end
	handler(msg);
end

local listeners = {};
function listeners.onconnect(c)
	connected = true;
	partial = "";
	if unreachable_since then
		module:log("info", "pushrules sidecar reachable again at %s after %ds; %d buffered event(s) to send%s",
			socket_path, os.time() - unreachable_since, pending_tail - pending_head + 1,
			dropped > 0 and (", " .. dropped .. " dropped meanwhile") or "");
	else
		module:log("info", "connected to the pushrules sidecar at %s", socket_path);
	end
	unreachable_since, dropped, dropped_logged = nil, 0, 0;
	c:write(json.encode({ kind = "hello", host = host, boot = boot, shadow = shadow,
		shadow_window = shadow_window, version = contract_v2 and 2 or 1 }) .. "\n");
	paused = false;
	for i = pending_head, pending_tail do c:write(pending[i].line .. "\n"); end
	written = seq; -- what is not in the buffer was dropped (and counted)
end
function listeners.onincoming(_, data)
	local chunk = partial .. data;
	local start = 1;
	while true do
		local stop = chunk:find("\n", start, true);
		if not stop then break; end
		local ok, e = pcall(on_line, chunk:sub(start, stop - 1));
		if not ok then module:log("error", "pushrules: handling a sidecar line failed: %s", e); end
		start = stop + 1;
	end
	partial = chunk:sub(start);
end
function listeners.ondisconnect(_, err)
	if connected then
		module:log("warn", "lost the pushrules sidecar at %s (%s); reconnecting every %ss, buffering events",
			socket_path, tostring(err or "closed"), reconnect_interval);
	end
	connected, conn = false, nil;
	unreachable_since = unreachable_since or os.time();
	for n, waiter in pairs(waiters) do waiters[n] = nil; waiter.reply(false, "push service connection lost"); end
end

local function try_connect()
	local sock = unix.stream();
	local ok, err = sock:connect(socket_path);
	if not ok then
		sock:close();
		if not unreachable_since then
			unreachable_since = os.time();
			module:log("warn", "pushrules sidecar unreachable at %s (%s); retrying every %ss", socket_path, tostring(err), reconnect_interval);
		end
		return;
	end
	conn = server.wrapclient(sock, "unix", 0, listeners, "*a");
	if not conn then sock:close(); end
end

module:add_timer(0, function ()
	if not conn then try_connect(); end
	local now = os.time();
	for n, waiter in pairs(waiters) do
		if now >= waiter.deadline then waiters[n] = nil; waiter.reply(false, "push service did not answer in time"); end
	end
	return reconnect_interval;
end);


-- --- contract events from Prosody's hooks -------------------------------------------------------
local function bare_of(username) return username .. "@" .. host; end

local function is_stanza(stanza)
	return st.is_stanza(stanza) and (stanza.attr.xmlns == nil or stanza.attr.xmlns == "jabber:client")
		and (stanza.name == "message" or stanza.name == "presence" or stanza.name == "iq");
end

-- Runs after mod_smacks' -999 filter, so the stanza is already in the smacks queue. It does not run
-- while the session hibernates (smacks ends the chain there; smacks-hibernation-stanza-queued
-- reports those). No filtering for volume: every queued stanza is an event.
local function queued_filter(stanza, session)
	if session.smacks and session.full_jid and not session.resending_unacked and is_stanza(stanza) then
		emit({ event = "stanza-queued", session = session.full_jid, stanza = stanza_xml(stanza) });
	end
	return stanza;
end

local function watch_session(session)
	if session.type == "c2s" and session.full_jid then
		filters.add_filter(session, "stanzas/out", queued_filter, -1000);
	end
end

module:hook("resource-bind", function (event)
	local session = event.session;
	if session.type ~= "c2s" then return; end
	session.pushrules_ack_delayed = nil;
	emit({ event = "session-bind", session = session.full_jid });
	watch_session(session);
end);

module:hook("resource-unbind", function (event)
	local session = event.session;
	if session.type ~= "c2s" or not session.full_jid then return; end
	emit({ event = "session-destroyed", session = session.full_jid });
end);

module:hook("smacks-ack-delayed", function (event)
	local session = event.origin;
	if session.type ~= "c2s" or not session.full_jid then return; end -- s2s smacks
	session.pushrules_ack_delayed = true; -- awaiting_ack is also true during the normal wait
	emit({ event = "smacks-ack-delayed", session = session.full_jid, queue = queue_xml(event.queue) });
end);

-- 0.12 has no smacks-ack-received event: an <a/> after a delayed ack is one. Priority 10 runs
-- before mod_smacks' handler, which stops the event.
local function ack_received(event)
	local session = event.origin;
	if session.pushrules_ack_delayed and session.full_jid then
		session.pushrules_ack_delayed = nil;
		emit({ event = "smacks-ack-received", session = session.full_jid });
	end
end
module:hook("stanza/urn:xmpp:sm:3:a", ack_received, 10);
module:hook("stanza/urn:xmpp:sm:2:a", ack_received, 10);

module:hook("smacks-hibernation-start", function (event)
	local session = event.origin;
	if session.type ~= "c2s" or not session.full_jid then return; end
	session.pushrules_ack_delayed = nil;
	emit({ event = "smacks-hibernation-start", session = session.full_jid, queue = queue_xml(event.queue) });
end);

module:hook("smacks-hibernation-end", function (event)
	local session = event.resumed; -- event.origin is the temporary session that resumed it
	if not session or not session.full_jid then return; end
	session.pushrules_ack_delayed = nil;
	emit({ event = "smacks-hibernation-end", session = session.full_jid });
end);

module:hook("smacks-hibernation-stanza-queued", function (event)
	local session = event.origin;
	if session.type ~= "c2s" or not session.full_jid then return; end
	emit({ event = "stanza-queued", session = session.full_jid, stanza = stanza_xml(event.stanza) });
end);

-- mod_mam fires this for the sender's archive and for the recipient's; the contract's event is
-- the copy stored for its recipient (mod_cloud_notify reads it the same way).
module:hook("archive-message-added", function (event)
	local stanza, for_user = event.stanza, event.for_user;
	if not for_user or not stanza then return; end
	local user = bare_of(for_user);
	if jid_util.bare(stanza.attr.to) ~= user then return; end
	emit({ event = "archive-message-added", for_user = user, stanza = stanza_xml(stanza) });
end);

-- Priority 1: before mod_offline (-1) stores it; the event does not stop storage.
module:hook("message/offline/handle", function (event)
	local stanza = event.stanza;
	local username = event.username or jid_util.node(stanza.attr.to);
	if not username then return; end
	emit({ event = "message/offline/handle", user = bare_of(username), stanza = stanza_xml(stanza) });
end, 1);

-- --- version-2 events (pushrules_contract_version = 2) --------------------------------------------
local xmlns_bookmarks = "urn:xmpp:bookmarks:1";
local notify_namespaces = { "urn:xmpp:notification-settings:1", "urn:xmpp:notification-settings:0" };
local notify_settings = { ["always"] = true, ["on-mention"] = true, ["never"] = true };

-- XEP-0492's <notify/> in a XEP-0402 bookmark's <extensions/>: "always", "on-mention" or
-- "never" (its first such child: the setting for every client type), or nil.
local function bookmark_notify(conference)
	local extensions = conference and conference:get_child("extensions");
	if not extensions then return nil; end
	for _, xmlns in ipairs(notify_namespaces) do
		local notify = extensions:get_child("notify", xmlns);
		if notify then
			for setting in notify:childtags() do
				if notify_settings[setting.name] then return setting.name; end
			end
		end
	end
	return nil;
end

local function on_bookmark_published(event)
	local username = event.service and event.service.config and event.service.config.pep_username;
	local chat = event.id and jid_util.prep(event.id);
	local conference = event.item and event.item:get_child("conference", xmlns_bookmarks);
	local notify = bookmark_notify(conference);
	if not username or not chat or not notify then return; end -- no XEP-0492 setting: nothing to say
	local nick = conference:get_child_text("nick");
	emit({ event = "chat-settings", user = bare_of(username), chat = chat, notify = notify,
		nick = (nick and nick ~= "") and nick or nil });
end

-- XEP-0357 section 8: the push service took away the publish affiliation of a node and says so
-- to the user's bare JID, as in the XEP's example (<pubsub node=…><affiliation/></pubsub>) or as
-- XEP-0060 section 8.9.4 writes it (<pubsub><affiliations node=…><affiliation/></affiliations>).
-- The affiliation is the user's or the host's (publishes come from the host); "none" or
-- "outcast" means no more publishing. The registration is (user, the notice's sender, node):
-- the sidecar ignores one that does not exist, so a notice from anyone else changes nothing.
local xmlns_pubsub = "http://jabber.org/protocol/pubsub";
local revoked = { ["none"] = true, ["outcast"] = true };

local function revoked_node(stanza, user)
	local pubsub = stanza:get_child("pubsub", xmlns_pubsub);
	if not pubsub then return nil; end
	local holder = pubsub:get_child("affiliations") or pubsub;
	local node = holder.attr.node;
	local affiliation = holder:get_child("affiliation");
	if not node or node == "" or not affiliation or not revoked[affiliation.attr.affiliation] then
		return nil;
	end
	local whose = jid_util.prep(affiliation.attr.jid or "");
	if whose ~= user and whose ~= host then return nil; end
	return node;
end

local function on_message_to_bare(event)
	local stanza = event.stanza;
	local kind = stanza.attr.type;
	if kind == "error" or kind == "groupchat" or not stanza.attr.from then return; end
	local user = jid_util.prep(stanza.attr.to or "");
	local service = jid_util.prep(stanza.attr.from);
	local node = user and service and revoked_node(stanza, user);
	if not node then return; end
	module:log("info", "XEP-0357 remote disable notice from %s: node %s of %s", service, node, user);
	-- Observed only: the notice still reaches the user's clients (or offline storage) as any
	-- message does. A client may want to know, and this module cannot tell it from a XEP-0060
	-- notice of the user's own pubsub affiliations, which must not be swallowed.
	emit({ event = "push-remote-disable", user = user, jid = service, node = node });
end

local function on_csi(state)
	return function (event)
		local session = event.origin;
		if session.type ~= "c2s" or not session.full_jid then return; end
		emit({ event = "csi-state", session = session.full_jid, state = state });
	end;
end

if contract_v2 then
	-- mod_message fires it for a groupchat message to the bare JID (or to a resource that is
	-- gone) of an existing user; nobody receives it. Observed only: the result is left alone,
	-- so the sender still gets what it got before.
	module:hook("message/bare/groupchat", function (event)
		local to = event.stanza.attr.to;
		local username = to and jid_util.node(to);
		if not username then return; end
		emit({ event = "message/bare/groupchat", user = bare_of(username), stanza = stanza_xml(event.stanza) });
	end, 1);
	-- Before mod_mam (0) and mod_message (-1) handle it: disabled before its own push is decided.
	module:hook("message/bare", on_message_to_bare, 10);
	module:hook("csi-client-active", on_csi("active"), 1);
	module:hook("csi-client-inactive", on_csi("inactive"), 1);
	-- Each user's PEP service (mod_pep): a bookmark published or replaced. A bookmark removed
	-- has no contract event (the setting stays until replaced).
	module:handle_items("pep-service", function (event)
		module:hook_object_event(event.item.service.events, "item-published/" .. xmlns_bookmarks, on_bookmark_published);
	end, function (event)
		module:unhook_object_event(event.item.service.events, "item-published/" .. xmlns_bookmarks, on_bookmark_published);
	end, true);
end

-- --- XEP-0357 enable/disable --------------------------------------------------------------------
local function publish_options(enable)
	local form = enable:get_child("x", xmlns_data);
	if not form then return nil, nil; end
	local secret, others = nil, {};
	for field in form:childtags("field") do
		local var = field.attr.var;
		if var and var ~= "FORM_TYPE" then
			local value = field:get_child_text("value") or "";
			if var == "secret" then secret = value; else others[var] = value; end
		end
	end
	return secret, next(others) and others or nil;
end

-- (event fields, error) for an <enable/>/<disable/>; the error is (type, condition, text).
local function read_request(origin, request, need_node)
	local push_jid = request.attr.jid;
	if not push_jid or push_jid == "" then return nil, "Missing jid"; end
	local prepped = jid_util.prep(push_jid);
	if not prepped then return nil, "Invalid jid"; end
	if prepped == origin.full_jid then return nil, "JID must be different from ours"; end
	local node = request.attr.node;
	if need_node and (not node or node == "") then return nil, "Missing node"; end
	if node == "" then node = nil; end
	return { jid = prepped, node = node };
end

local function answer_when_applied(origin, stanza)
	return function (ok, why)
		if ok then
			origin.send(st.reply(stanza));
		else
			module:log("warn", "push %s from %s not registered: %s", stanza.tags[1].name, tostring(origin.full_jid), tostring(why));
			origin.send(st.error_reply(stanza, "wait", "internal-server-error", why or "push service unavailable"));
		end
	end;
end

local function on_request(name, need_node)
	return function (event)
		local origin, stanza = event.origin, event.stanza;
		local request = stanza.tags[1];
		local fields, problem = read_request(origin, request, need_node);
		if not fields then
			if shadow then return; end -- mod_cloud_notify answers
			origin.send(st.error_reply(stanza, "modify", "bad-request", problem));
			return true;
		end
		local data = { event = name, session = origin.full_jid, jid = fields.jid, node = fields.node };
		if name == "push-enable" then data.secret, data.publish_options = publish_options(request); end
		if shadow then emit(data); return; end -- observe only: mod_cloud_notify answers
		emit(data, answer_when_applied(origin, stanza));
		return true;
	end;
end

local enable_priority = shadow and 10 or 0;
module:hook("iq-set/self/" .. xmlns_push .. ":enable", on_request("push-enable", true), enable_priority);
module:hook("iq-set/self/" .. xmlns_push .. ":disable", on_request("push-disable", false), enable_priority);

if shadow then
	-- What mod_cloud_notify sent, for the sidecar's comparison (runs after extensions that block).
	module:hook("cloud_notify/push", function (event)
		local info, original = event.push_info or {}, event.original_stanza;
		send_numbered({ kind = "observed", user = bare_of(event.username), jid = info.jid,
			node = info.node or json.null, stanza = original and original.attr.id or json.null,
			important = event.important == true });
	end, -1000);
else
	module:hook("account-disco-info", function (event)
		event.reply:tag("feature", { var = xmlns_push }):up();
	end);
end

local function each_session(fn)
	for _, user in pairs(prosody.hosts[host] and prosody.hosts[host].sessions or {}) do
		for _, session in pairs(user.sessions or {}) do fn(session); end
	end
end

-- Sessions bound before the module was loaded (a reload) get the queue filter too.
each_session(watch_session);

function module.unload()
	each_session(function (session) filters.remove_filter(session, "stanzas/out", queued_filter); end);
	if conn then conn:close(); end
end

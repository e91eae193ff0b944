-- Prosody for Homeflex agents: one XMPP domain, clients only, TLS with our certificate.
--
-- A template: homeflex.cloud.xmpp.prosody fills in the placeholders and writes the result
-- (tests: a temporary directory; a real install: /etc/prosody/conf.d/homeflex.cfg.lua, with
-- the service's key and chain copied to /etc/prosody/certs/ readable by the `prosody` user,
-- data in /var/lib/prosody, run by the Debian unit as user `prosody` — never as root).
--
-- Placeholders (a dollar sign before the name): domain listen port data_dir certificate key
-- run_as_root module_dir

pidfile = "$data_dir/prosody.pid"
data_path = "$data_dir"
log = {
    info = "$data_dir/prosody.log";
    { levels = { min = "info" }, to = "console" };
}
-- true only when the tests run as root in a sandbox; an install runs Prosody as `prosody`
run_as_root = $run_as_root

-- clients only: no server-to-server, no HTTP, no components; listen on one address
plugin_paths = { "$module_dir" }   -- mod_homeflex_audit: refusals in the log
certificates = "$data_dir/certs"   -- unused: the certificate is named below
modules_enabled = {
    "homeflex_audit";
    "admin_shell";   -- `prosodyctl shell` (Unix socket in the data directory): account removal
                     -- ends open sessions
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "time"; "version"; "uptime";
    "carbons"; "pep"; "blocklist"; "vcard_legacy";
}
modules_disabled = { "s2s"; "s2s_auth_certs"; "dialback"; "register"; "register_ibr"; "http" }
interfaces = { "$listen" }
c2s_interfaces = { "$listen" }
c2s_ports = { $port }
c2s_direct_tls_ports = { }   -- STARTTLS on the client port, like the embedded server
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }

-- no password without TLS, no self-registration: accounts are made by enrollment
-- (`prosodyctl adduser`, password on stdin)
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = true
allow_registration = false
authentication = "internal_hashed"
storage = "internal"

-- our service certificate: cert.pem is the leaf followed by the fleet CA, as clients need it
ssl = {
    certificate = "$certificate";
    key = "$key";
    protocol = "tlsv1_2+";
}

VirtualHost "$domain"
    ssl = {
        certificate = "$certificate";
        key = "$key";
        protocol = "tlsv1_2+";
    }

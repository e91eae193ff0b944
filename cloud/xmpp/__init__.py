"""XMPP for the agents: the embedded server (pyjabber), Prosody for production, and the rules
both follow — TLS with our service certificate before anything else, no self-registration,
accounts created by our code with random passwords.

Domain convention: the XMPP domain is the DNS name of the XMPP service, e.g.
`xmpp.<aggregator's domain>`; tests and the demo use `xmpp.homeflex.test` (`.test` is reserved
by RFC 6761, so it can never reach a real host). The service's certificate (role SERVICE)
carries the domain as a dNSName, which is what clients check. A party's address is
`<identity name>@<domain>`, the same address its certificate carries as id-on-xmppAddr."""

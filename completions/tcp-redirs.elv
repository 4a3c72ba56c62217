
use builtin;
use str;

set edit:completion:arg-completer[tcp-redirs] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'tcp-redirs'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'tcp-redirs'= {
            cand --app 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]'
            cand -a 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand --alias 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'List the TCP redirections of an application (the default command)'
            cand list-namespaces 'List the namespaces you may add redirections in'
            cand add 'Add a TCP redirection: a public port in a namespace, forwarded to the application'
            cand remove 'Remove a TCP redirection; its port stops accepting at once'
            cand update 'Change a redirection''s settings in place: open connections keep theirs, new ones get the new settings at once'
            cand apps 'Manage applications (operator): where a redirection''s traffic goes'
            cand apply 'Make the server match a file of applications and redirections, idempotently'
            cand export 'Write the applications and redirections in the format of `apply`'
            cand link 'Link an application to this directory, under an alias'
            cand unlink 'Remove an application''s link from this directory'
            cand login 'Save a server and its credential as a profile, after checking them'
            cand logout 'Forget a saved profile'
            cand profile 'List the saved profiles, or choose the current one'
            cand nodes 'List the gateway nodes sharing the server''s store, up or down'
            cand events 'Show the audit trail: who changed what, when, from where; --follow streams new events'
            cand webhooks 'Manage webhooks: where the organisation''s events are posted as they happen'
            cand orgs 'Manage organisations (admin)'
            cand tokens 'Manage an organisation''s credentials (admin)'
            cand serve 'Run the control server: the API, the port allocator, the store and the forwarding'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;list'= {
            cand --app 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]'
            cand -a 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand --alias 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;list-namespaces'= {
            cand --app 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]'
            cand -a 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand --alias 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;add'= {
            cand --namespace 'The namespace to take a port in (`list-namespaces` shows them). Without it, a terminal offers the choice, and a script gets `default`'
            cand --port 'Ask for this precise port of the namespace''s range instead of a random one'
            cand --min-port 'Pick the random port from this one up (Clever''s `minPort`) [default: the namespace''s lowest]'
            cand --max-port 'Pick the random port up to this one (Clever''s `maxPort`) [default: the namespace''s highest]'
            cand --ports 'Take a range of this many consecutive public ports (TCP): public port FIRST+i goes to each instance''s port +i [default: 1]'
            cand --last-port 'Take the range from --port up to this port (TCP), instead of --ports'
            cand --connect-timeout 'Seconds an instance may take to accept before the next is tried [default: the namespace''s, 5]'
            cand --idle-timeout 'Seconds a connection may go without a byte before it is closed [default: the namespace''s, 3600]'
            cand --half-close-timeout 'Seconds a connection may stay half-closed [default: the namespace''s, 60]'
            cand --max-connections 'The most connections open at once; more are refused [default: unlimited]'
            cand --max-connections-per-second 'The most new connections per second; more are refused [default: unlimited]'
            cand --max-datagrams-per-second 'UDP: the most datagrams per second from one client address; more are dropped [default: unlimited]'
            cand --max-connections-per-client 'The most connections (UDP: flows) open at once from one client address (IPv6: its /64); more are refused [default: unlimited]'
            cand --max-connections-per-second-per-client 'The most new connections (UDP: flows) per second from one client address (IPv6: its /64); more are refused [default: unlimited]'
            cand --bandwidth-limit 'TCP: the most bytes per second each way, shared by all the redirection''s connections (512k, 10M, 1G: powers of 1000; 64Ki, 10Mi: of 1024) [default: unlimited]'
            cand --proxy-protocol 'Send the PROXY protocol header (v1 or v2; UDP: v2, or v2-every for every datagram) to the instance, so it sees the client''s address'
            cand --allow 'Only clients in this range may connect (CIDR or address; repeat for several)'
            cand --deny 'Refuse clients in this range, even when allowed (CIDR or address; repeat for several)'
            cand --app 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]'
            cand -a 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand --alias 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand --udp 'A UDP redirection instead of a TCP one (UDP ports are a space of their own)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;remove'= {
            cand --namespace 'The namespace the port belongs to'
            cand --app 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]'
            cand -a 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand --alias 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand --udp 'The port is a UDP redirection''s (TCP''s and UDP''s ports are separate)'
            cand -y 'Do not ask for confirmation (only a terminal asks)'
            cand --yes 'Do not ask for confirmation (only a terminal asks)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;update'= {
            cand --namespace 'The namespace the port belongs to'
            cand --unset 'Take a setting back to the namespace''s default (repeat for several); `--allow` and `--deny` given here replace their whole list'
            cand --connect-timeout 'Seconds an instance may take to accept before the next is tried [default: the namespace''s, 5]'
            cand --idle-timeout 'Seconds a connection may go without a byte before it is closed [default: the namespace''s, 3600]'
            cand --half-close-timeout 'Seconds a connection may stay half-closed [default: the namespace''s, 60]'
            cand --max-connections 'The most connections open at once; more are refused [default: unlimited]'
            cand --max-connections-per-second 'The most new connections per second; more are refused [default: unlimited]'
            cand --max-datagrams-per-second 'UDP: the most datagrams per second from one client address; more are dropped [default: unlimited]'
            cand --max-connections-per-client 'The most connections (UDP: flows) open at once from one client address (IPv6: its /64); more are refused [default: unlimited]'
            cand --max-connections-per-second-per-client 'The most new connections (UDP: flows) per second from one client address (IPv6: its /64); more are refused [default: unlimited]'
            cand --bandwidth-limit 'TCP: the most bytes per second each way, shared by all the redirection''s connections (512k, 10M, 1G: powers of 1000; 64Ki, 10Mi: of 1024) [default: unlimited]'
            cand --proxy-protocol 'Send the PROXY protocol header (v1 or v2; UDP: v2, or v2-every for every datagram) to the instance, so it sees the client''s address'
            cand --allow 'Only clients in this range may connect (CIDR or address; repeat for several)'
            cand --deny 'Refuse clients in this range, even when allowed (CIDR or address; repeat for several)'
            cand --app 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]'
            cand -a 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand --alias 'The application linked to this directory under ALIAS (`tcp-redirs link`)'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand --udp 'The port is a UDP redirection''s (TCP''s and UDP''s ports are separate)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;apps'= {
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand create 'Create an application with its instances'
            cand update 'Change an application''s health checks in place: every node follows when the command returns; its ports, connections and instances stay'
            cand set-instances 'Replace an application''s instances, live: open connections stay where they are'
            cand list 'List the applications'
            cand remove 'Remove an application and all its redirections'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;apps;create'= {
            cand --instance 'An address where the application listens, HOST:PORT, optionally =WEIGHT (0 takes no new connection; 1 by default). Repeat for several'
            cand --check 'What a health check does: connect, expect (send --check-send, expect --check-expect) or none [default: the node''s, connect]'
            cand --check-interval-ms 'Milliseconds between two health checks of an instance [default: the node''s, 5000]'
            cand --check-timeout-ms 'Milliseconds a health check may take, no more than the interval [default: the node''s, 2000]'
            cand --check-rise 'Successful health checks in a row that bring a down instance up [default: the node''s, 2]'
            cand --check-fall 'Failed health checks in a row that take an up instance down [default: the node''s, 3]'
            cand --check-send 'Bytes a health check sends once connected, in hexadecimal (50494e470d0a is PING\r\n)'
            cand --check-expect 'Bytes the instance''s answer must start with, in hexadecimal (2b504f4e47 is +PONG); implies --check expect'
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;apps;update'= {
            cand --unset 'Take a setting back to the node''s `[health_checks]` (repeat for several)'
            cand --check 'What a health check does: connect, expect (send --check-send, expect --check-expect) or none [default: the node''s, connect]'
            cand --check-interval-ms 'Milliseconds between two health checks of an instance [default: the node''s, 5000]'
            cand --check-timeout-ms 'Milliseconds a health check may take, no more than the interval [default: the node''s, 2000]'
            cand --check-rise 'Successful health checks in a row that bring a down instance up [default: the node''s, 2]'
            cand --check-fall 'Failed health checks in a row that take an up instance down [default: the node''s, 3]'
            cand --check-send 'Bytes a health check sends once connected, in hexadecimal (50494e470d0a is PING\r\n)'
            cand --check-expect 'Bytes the instance''s answer must start with, in hexadecimal (2b504f4e47 is +PONG); implies --check expect'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;apps;set-instances'= {
            cand --instance 'HOST:PORT[=WEIGHT], repeated for each instance'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;apps;list'= {
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;apps;remove'= {
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;apps;help'= {
            cand create 'Create an application with its instances'
            cand update 'Change an application''s health checks in place: every node follows when the command returns; its ports, connections and instances stay'
            cand set-instances 'Replace an application''s instances, live: open connections stay where they are'
            cand list 'List the applications'
            cand remove 'Remove an application and all its redirections'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;apps;help;create'= {
        }
        &'tcp-redirs;apps;help;update'= {
        }
        &'tcp-redirs;apps;help;set-instances'= {
        }
        &'tcp-redirs;apps;help;list'= {
        }
        &'tcp-redirs;apps;help;remove'= {
        }
        &'tcp-redirs;apps;help;help'= {
        }
        &'tcp-redirs;apply'= {
            cand -f 'The file to apply (TOML; `tcp-redirs export` writes one)'
            cand --file 'The file to apply (TOML; `tcp-redirs export` writes one)'
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand --dry-run 'Say what would change, and change nothing'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;export'= {
            cand --org 'Only this organisation, by id (orga_…) or name [default: every one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;link'= {
            cand --alias 'The name to use it by [default: the application''s name]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;unlink'= {
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;login'= {
            cand --profile 'The profile to save (and make current)'
            cand --secret 'The secret of the token (Clever''s OAuth form), kept with it'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;logout'= {
            cand --profile 'The profile to forget [default: the current one]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;profile'= {
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand list 'List the saved profiles (never their credentials)'
            cand use 'Make a saved profile the current one'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;profile;list'= {
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;profile;use'= {
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;profile;help'= {
            cand list 'List the saved profiles (never their credentials)'
            cand use 'Make a saved profile the current one'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;profile;help;list'= {
        }
        &'tcp-redirs;profile;help;use'= {
        }
        &'tcp-redirs;profile;help;help'= {
        }
        &'tcp-redirs;nodes'= {
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand forget 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;nodes;forget'= {
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;nodes;help'= {
            cand forget 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;nodes;help;forget'= {
        }
        &'tcp-redirs;nodes;help;help'= {
        }
        &'tcp-redirs;events'= {
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand --app 'Only events of this application, by id (app_…) or name'
            cand --kind 'Only events of these kinds (repeat, or separate with commas)'
            cand --since 'Only events of the last DURATION (`90s`, `15m`, `2h`, `7d`)'
            cand --limit 'How many events to show (the newest), 1 to 1000'
            cand --after 'With --follow: start after this event id (the last one a previous run printed) instead of the newest events'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand --all 'Every organisation''s events, and the admin''s own (admin)'
            cand -f 'Keep printing new events as they happen, until interrupted'
            cand --follow 'Keep printing new events as they happen, until interrupted'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;webhooks'= {
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand create 'Register a webhook: the organisation''s events from now on are posted to URL, signed; the signing secret is shown this once'
            cand list 'List the organisation''s webhooks and how their deliveries stand'
            cand remove 'Remove a webhook; its deliveries stop'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;webhooks;create'= {
            cand --url 'https://HOST/PATH, or http:// to a loopback address'
            cand --kind 'Only events of these kinds (repeat, or separate with commas) [default: every kind]'
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;webhooks;list'= {
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;webhooks;remove'= {
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;webhooks;help'= {
            cand create 'Register a webhook: the organisation''s events from now on are posted to URL, signed; the signing secret is shown this once'
            cand list 'List the organisation''s webhooks and how their deliveries stand'
            cand remove 'Remove a webhook; its deliveries stop'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;webhooks;help;create'= {
        }
        &'tcp-redirs;webhooks;help;list'= {
        }
        &'tcp-redirs;webhooks;help;remove'= {
        }
        &'tcp-redirs;webhooks;help;help'= {
        }
        &'tcp-redirs;orgs'= {
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand create 'Create an organisation (admin only)'
            cand list 'List the organisations your credential sees'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;orgs;create'= {
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;orgs;list'= {
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;orgs;help'= {
            cand create 'Create an organisation (admin only)'
            cand list 'List the organisations your credential sees'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;orgs;help;create'= {
        }
        &'tcp-redirs;orgs;help;list'= {
        }
        &'tcp-redirs;orgs;help;help'= {
        }
        &'tcp-redirs;tokens'= {
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand create 'Issue a credential for an organisation; its token and secret are shown this once'
            cand list 'List an organisation''s credentials (never their secrets)'
            cand revoke 'Revoke a credential; it stops working at once'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;tokens;create'= {
            cand --name 'What the credential is for'
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;tokens;list'= {
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;tokens;revoke'= {
            cand --org 'The organisation, by id (orga_…) or name [default: the only one the credential sees]'
            cand -F 'Output format [default: human]'
            cand --format 'Output format [default: human]'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'tcp-redirs;tokens;help'= {
            cand create 'Issue a credential for an organisation; its token and secret are shown this once'
            cand list 'List an organisation''s credentials (never their secrets)'
            cand revoke 'Revoke a credential; it stops working at once'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;tokens;help;create'= {
        }
        &'tcp-redirs;tokens;help;list'= {
        }
        &'tcp-redirs;tokens;help;revoke'= {
        }
        &'tcp-redirs;tokens;help;help'= {
        }
        &'tcp-redirs;serve'= {
            cand --listen 'The control API''s address (port 0 picks a free port; the address is logged)'
            cand --data-dir 'Where the store and the admin credential live [default: the user''s data directory]'
            cand --public-bind 'The address public ports bind when the config file does not say'
            cand --config 'A TOML file declaring namespaces and applications'
            cand --tls-cert 'Serve the control API over TLS with this PEM certificate (chain); needs --tls-key'
            cand --tls-key 'The PEM private key of --tls-cert'
            cand --drain-timeout 'Seconds open connections may run on after SIGTERM or SIGINT'
            cand --threads 'How many threads forward connections [default: one per core]'
            cand --store 'Share the redirection table with other nodes through etcd: etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (cargo feature `etcd`) [default: SQLite in the data directory]'
            cand --store-ca 'The CA certificate (PEM) that signed etcd''s: talk to etcd over TLS, checking it is etcd'
            cand --store-cert 'This node''s client certificate (PEM), for an etcd run with --client-cert-auth; needs --store-key'
            cand --store-key 'The private key (PEM) of --store-cert'
            cand --store-user 'The etcd user this node logs in as (etcd''s auth); its password comes from --store-password-file or TCP_REDIRS_STORE_PASSWORD, never from the command line'
            cand --store-password-file 'A file holding the etcd user''s password (its first line)'
            cand --node 'This node''s name in the fleet [default: the host name]'
            cand --namespaces 'Serve only these namespaces (comma-separated) [default: all]'
            cand --port-mode 'How public TCP ports listen: `steered` (every port on one socket per address family, steered by the kernel with BPF sk_lookup: needs Linux 5.9 and CAP_BPF with CAP_NET_ADMIN, or root), `bound` (one listening socket per port), or `auto` (steered where it can be, else bound, saying why at start)'
            cand --node-ttl 'Seconds the node stays listed as up after it last reached the store'
            cand --server 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]'
            cand --token 'The API token [default: the profile''s]'
            cand --access-log 'Log one line per connection when it ends, on every port (else per namespace: access_log)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'tcp-redirs;help'= {
            cand list 'List the TCP redirections of an application (the default command)'
            cand list-namespaces 'List the namespaces you may add redirections in'
            cand add 'Add a TCP redirection: a public port in a namespace, forwarded to the application'
            cand remove 'Remove a TCP redirection; its port stops accepting at once'
            cand update 'Change a redirection''s settings in place: open connections keep theirs, new ones get the new settings at once'
            cand apps 'Manage applications (operator): where a redirection''s traffic goes'
            cand apply 'Make the server match a file of applications and redirections, idempotently'
            cand export 'Write the applications and redirections in the format of `apply`'
            cand link 'Link an application to this directory, under an alias'
            cand unlink 'Remove an application''s link from this directory'
            cand login 'Save a server and its credential as a profile, after checking them'
            cand logout 'Forget a saved profile'
            cand profile 'List the saved profiles, or choose the current one'
            cand nodes 'List the gateway nodes sharing the server''s store, up or down'
            cand events 'Show the audit trail: who changed what, when, from where; --follow streams new events'
            cand webhooks 'Manage webhooks: where the organisation''s events are posted as they happen'
            cand orgs 'Manage organisations (admin)'
            cand tokens 'Manage an organisation''s credentials (admin)'
            cand serve 'Run the control server: the API, the port allocator, the store and the forwarding'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcp-redirs;help;list'= {
        }
        &'tcp-redirs;help;list-namespaces'= {
        }
        &'tcp-redirs;help;add'= {
        }
        &'tcp-redirs;help;remove'= {
        }
        &'tcp-redirs;help;update'= {
        }
        &'tcp-redirs;help;apps'= {
            cand create 'Create an application with its instances'
            cand update 'Change an application''s health checks in place: every node follows when the command returns; its ports, connections and instances stay'
            cand set-instances 'Replace an application''s instances, live: open connections stay where they are'
            cand list 'List the applications'
            cand remove 'Remove an application and all its redirections'
        }
        &'tcp-redirs;help;apps;create'= {
        }
        &'tcp-redirs;help;apps;update'= {
        }
        &'tcp-redirs;help;apps;set-instances'= {
        }
        &'tcp-redirs;help;apps;list'= {
        }
        &'tcp-redirs;help;apps;remove'= {
        }
        &'tcp-redirs;help;apply'= {
        }
        &'tcp-redirs;help;export'= {
        }
        &'tcp-redirs;help;link'= {
        }
        &'tcp-redirs;help;unlink'= {
        }
        &'tcp-redirs;help;login'= {
        }
        &'tcp-redirs;help;logout'= {
        }
        &'tcp-redirs;help;profile'= {
            cand list 'List the saved profiles (never their credentials)'
            cand use 'Make a saved profile the current one'
        }
        &'tcp-redirs;help;profile;list'= {
        }
        &'tcp-redirs;help;profile;use'= {
        }
        &'tcp-redirs;help;nodes'= {
            cand forget 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again'
        }
        &'tcp-redirs;help;nodes;forget'= {
        }
        &'tcp-redirs;help;events'= {
        }
        &'tcp-redirs;help;webhooks'= {
            cand create 'Register a webhook: the organisation''s events from now on are posted to URL, signed; the signing secret is shown this once'
            cand list 'List the organisation''s webhooks and how their deliveries stand'
            cand remove 'Remove a webhook; its deliveries stop'
        }
        &'tcp-redirs;help;webhooks;create'= {
        }
        &'tcp-redirs;help;webhooks;list'= {
        }
        &'tcp-redirs;help;webhooks;remove'= {
        }
        &'tcp-redirs;help;orgs'= {
            cand create 'Create an organisation (admin only)'
            cand list 'List the organisations your credential sees'
        }
        &'tcp-redirs;help;orgs;create'= {
        }
        &'tcp-redirs;help;orgs;list'= {
        }
        &'tcp-redirs;help;tokens'= {
            cand create 'Issue a credential for an organisation; its token and secret are shown this once'
            cand list 'List an organisation''s credentials (never their secrets)'
            cand revoke 'Revoke a credential; it stops working at once'
        }
        &'tcp-redirs;help;tokens;create'= {
        }
        &'tcp-redirs;help;tokens;list'= {
        }
        &'tcp-redirs;help;tokens;revoke'= {
        }
        &'tcp-redirs;help;serve'= {
        }
        &'tcp-redirs;help;help'= {
        }
    ]
    $completions[$command]
}

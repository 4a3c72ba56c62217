# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_tcp_redirs_global_optspecs
    string join \n app= a/alias= F/format= server= token= h/help V/version
end

function __fish_tcp_redirs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tcp_redirs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_tcp_redirs_using_subcommand
    set -l cmd (__fish_tcp_redirs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -l app -d 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -s a -l alias -d 'The application linked to this directory under ALIAS (`tcp-redirs link`)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -s V -l version -d 'Print version'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "list" -d 'List the TCP redirections of an application (the default command)'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "list-namespaces" -d 'List the namespaces you may add redirections in'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "add" -d 'Add a TCP redirection: a public port in a namespace, forwarded to the application'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "remove" -d 'Remove a TCP redirection; its port stops accepting at once'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "update" -d 'Change a redirection\'s settings in place: open connections keep theirs, new ones get the new settings at once'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "apps" -d 'Manage applications (operator): where a redirection\'s traffic goes'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "apply" -d 'Make the server match a file of applications and redirections, idempotently'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "export" -d 'Write the applications and redirections in the format of `apply`'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "link" -d 'Link an application to this directory, under an alias'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "unlink" -d 'Remove an application\'s link from this directory'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "login" -d 'Save a server and its credential as a profile, after checking them'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "logout" -d 'Forget a saved profile'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "profile" -d 'List the saved profiles, or choose the current one'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "nodes" -d 'List the gateway nodes sharing the server\'s store, up or down'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "events" -d 'Show the audit trail: who changed what, when, from where; --follow streams new events'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "webhooks" -d 'Manage webhooks: where the organisation\'s events are posted as they happen'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "orgs" -d 'Manage organisations (admin)'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "tokens" -d 'Manage an organisation\'s credentials (admin)'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "serve" -d 'Run the control server: the API, the port allocator, the store and the forwarding'
complete -c tcp-redirs -n "__fish_tcp_redirs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list" -l app -d 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list" -s a -l alias -d 'The application linked to this directory under ALIAS (`tcp-redirs link`)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list-namespaces" -l app -d 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list-namespaces" -s a -l alias -d 'The application linked to this directory under ALIAS (`tcp-redirs link`)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list-namespaces" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list-namespaces" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list-namespaces" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list-namespaces" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand list-namespaces" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l namespace -d 'The namespace to take a port in (`list-namespaces` shows them). Without it, a terminal offers the choice, and a script gets `default`' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l port -d 'Ask for this precise port of the namespace\'s range instead of a random one' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l min-port -d 'Pick the random port from this one up (Clever\'s `minPort`) [default: the namespace\'s lowest]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l max-port -d 'Pick the random port up to this one (Clever\'s `maxPort`) [default: the namespace\'s highest]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l ports -d 'Take a range of this many consecutive public ports (TCP): public port FIRST+i goes to each instance\'s port +i [default: 1]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l last-port -d 'Take the range from --port up to this port (TCP), instead of --ports' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l connect-timeout -d 'Seconds an instance may take to accept before the next is tried [default: the namespace\'s, 5]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l idle-timeout -d 'Seconds a connection may go without a byte before it is closed [default: the namespace\'s, 3600]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l half-close-timeout -d 'Seconds a connection may stay half-closed [default: the namespace\'s, 60]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l max-connections -d 'The most connections open at once; more are refused [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l max-connections-per-second -d 'The most new connections per second; more are refused [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l max-datagrams-per-second -d 'UDP: the most datagrams per second from one client address; more are dropped [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l max-connections-per-client -d 'The most connections (UDP: flows) open at once from one client address (IPv6: its /64); more are refused [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l max-connections-per-second-per-client -d 'The most new connections (UDP: flows) per second from one client address (IPv6: its /64); more are refused [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l bandwidth-limit -d 'TCP: the most bytes per second each way, shared by all the redirection\'s connections (512k, 10M, 1G: powers of 1000; 64Ki, 10Mi: of 1024) [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l proxy-protocol -d 'Send the PROXY protocol header (v1 or v2; UDP: v2, or v2-every for every datagram) to the instance, so it sees the client\'s address' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l allow -d 'Only clients in this range may connect (CIDR or address; repeat for several)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l deny -d 'Refuse clients in this range, even when allowed (CIDR or address; repeat for several)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l app -d 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -s a -l alias -d 'The application linked to this directory under ALIAS (`tcp-redirs link`)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -l udp -d 'A UDP redirection instead of a TCP one (UDP ports are a space of their own)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -l namespace -d 'The namespace the port belongs to' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -l app -d 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -s a -l alias -d 'The application linked to this directory under ALIAS (`tcp-redirs link`)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -l udp -d 'The port is a UDP redirection\'s (TCP\'s and UDP\'s ports are separate)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -s y -l yes -d 'Do not ask for confirmation (only a terminal asks)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l namespace -d 'The namespace the port belongs to' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l unset -d 'Take a setting back to the namespace\'s default (repeat for several); `--allow` and `--deny` given here replace their whole list' -r -f -a "connect-timeout\t'--connect-timeout'
idle-timeout\t'--idle-timeout'
half-close-timeout\t'--half-close-timeout'
max-connections\t'--max-connections'
max-connections-per-second\t'--max-connections-per-second'
max-datagrams-per-second\t'--max-datagrams-per-second (UDP)'
max-connections-per-client\t'--max-connections-per-client'
max-connections-per-second-per-client\t'--max-connections-per-second-per-client'
bandwidth-limit\t'--bandwidth-limit (TCP)'
proxy-protocol\t'--proxy-protocol (off)'
allow\t'every --allow (everyone may connect)'
deny\t'every --deny'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l connect-timeout -d 'Seconds an instance may take to accept before the next is tried [default: the namespace\'s, 5]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l idle-timeout -d 'Seconds a connection may go without a byte before it is closed [default: the namespace\'s, 3600]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l half-close-timeout -d 'Seconds a connection may stay half-closed [default: the namespace\'s, 60]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l max-connections -d 'The most connections open at once; more are refused [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l max-connections-per-second -d 'The most new connections per second; more are refused [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l max-datagrams-per-second -d 'UDP: the most datagrams per second from one client address; more are dropped [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l max-connections-per-client -d 'The most connections (UDP: flows) open at once from one client address (IPv6: its /64); more are refused [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l max-connections-per-second-per-client -d 'The most new connections (UDP: flows) per second from one client address (IPv6: its /64); more are refused [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l bandwidth-limit -d 'TCP: the most bytes per second each way, shared by all the redirection\'s connections (512k, 10M, 1G: powers of 1000; 64Ki, 10Mi: of 1024) [default: unlimited]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l proxy-protocol -d 'Send the PROXY protocol header (v1 or v2; UDP: v2, or v2-every for every datagram) to the instance, so it sees the client\'s address' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l allow -d 'Only clients in this range may connect (CIDR or address; repeat for several)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l deny -d 'Refuse clients in this range, even when allowed (CIDR or address; repeat for several)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l app -d 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -s a -l alias -d 'The application linked to this directory under ALIAS (`tcp-redirs link`)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -l udp -d 'The port is a UDP redirection\'s (TCP\'s and UDP\'s ports are separate)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand update" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -f -a "create" -d 'Create an application with its instances'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -f -a "update" -d 'Change an application\'s health checks in place: every node follows when the command returns; its ports, connections and instances stay'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -f -a "set-instances" -d 'Replace an application\'s instances, live: open connections stay where they are'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -f -a "list" -d 'List the applications'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -f -a "remove" -d 'Remove an application and all its redirections'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and not __fish_seen_subcommand_from create update set-instances list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l instance -d 'An address where the application listens, HOST:PORT, optionally =WEIGHT (0 takes no new connection; 1 by default). Repeat for several' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l check -d 'What a health check does: connect, expect (send --check-send, expect --check-expect) or none [default: the node\'s, connect]' -r -f -a "connect\t'A TCP connect'
expect\t'Connect, send `send`, and expect the answer to start with `expect`'
none\t'No active check: only failed connections mark an instance down'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l check-interval-ms -d 'Milliseconds between two health checks of an instance [default: the node\'s, 5000]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l check-timeout-ms -d 'Milliseconds a health check may take, no more than the interval [default: the node\'s, 2000]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l check-rise -d 'Successful health checks in a row that bring a down instance up [default: the node\'s, 2]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l check-fall -d 'Failed health checks in a row that take an up instance down [default: the node\'s, 3]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l check-send -d 'Bytes a health check sends once connected, in hexadecimal (50494e470d0a is PING\\r\\n)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l check-expect -d 'Bytes the instance\'s answer must start with, in hexadecimal (2b504f4e47 is +PONG); implies --check expect' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l unset -d 'Take a setting back to the node\'s `[health_checks]` (repeat for several)' -r -f -a "check\t'--check'
check-interval-ms\t'--check-interval-ms'
check-timeout-ms\t'--check-timeout-ms'
check-rise\t'--check-rise'
check-fall\t'--check-fall'
check-send\t'--check-send'
check-expect\t'--check-expect'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l check -d 'What a health check does: connect, expect (send --check-send, expect --check-expect) or none [default: the node\'s, connect]' -r -f -a "connect\t'A TCP connect'
expect\t'Connect, send `send`, and expect the answer to start with `expect`'
none\t'No active check: only failed connections mark an instance down'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l check-interval-ms -d 'Milliseconds between two health checks of an instance [default: the node\'s, 5000]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l check-timeout-ms -d 'Milliseconds a health check may take, no more than the interval [default: the node\'s, 2000]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l check-rise -d 'Successful health checks in a row that bring a down instance up [default: the node\'s, 2]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l check-fall -d 'Failed health checks in a row that take an up instance down [default: the node\'s, 3]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l check-send -d 'Bytes a health check sends once connected, in hexadecimal (50494e470d0a is PING\\r\\n)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l check-expect -d 'Bytes the instance\'s answer must start with, in hexadecimal (2b504f4e47 is +PONG); implies --check expect' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from update" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from set-instances" -l instance -d 'HOST:PORT[=WEIGHT], repeated for each instance' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from set-instances" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from set-instances" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from set-instances" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from set-instances" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from list" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from list" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from list" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from list" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from remove" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from remove" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from remove" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create an application with its instances'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from help" -f -a "update" -d 'Change an application\'s health checks in place: every node follows when the command returns; its ports, connections and instances stay'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from help" -f -a "set-instances" -d 'Replace an application\'s instances, live: open connections stay where they are'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the applications'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove an application and all its redirections'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apps; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apply" -s f -l file -d 'The file to apply (TOML; `tcp-redirs export` writes one)' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apply" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apply" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apply" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apply" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apply" -l dry-run -d 'Say what would change, and change nothing'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand apply" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand export" -l org -d 'Only this organisation, by id (orga_…) or name [default: every one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand export" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand export" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand export" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand link" -l alias -d 'The name to use it by [default: the application\'s name]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand link" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand link" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand link" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand link" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand unlink" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand unlink" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand unlink" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand unlink" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand login" -l profile -d 'The profile to save (and make current)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand login" -l secret -d 'The secret of the token (Clever\'s OAuth form), kept with it' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand login" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand login" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand login" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand login" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand logout" -l profile -d 'The profile to forget [default: the current one]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand logout" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand logout" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand logout" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand logout" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and not __fish_seen_subcommand_from list use help" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and not __fish_seen_subcommand_from list use help" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and not __fish_seen_subcommand_from list use help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and not __fish_seen_subcommand_from list use help" -f -a "list" -d 'List the saved profiles (never their credentials)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and not __fish_seen_subcommand_from list use help" -f -a "use" -d 'Make a saved profile the current one'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and not __fish_seen_subcommand_from list use help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from list" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from list" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from list" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from use" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from use" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from use" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from use" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the saved profiles (never their credentials)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from help" -f -a "use" -d 'Make a saved profile the current one'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand profile; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and not __fish_seen_subcommand_from forget help" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and not __fish_seen_subcommand_from forget help" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and not __fish_seen_subcommand_from forget help" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and not __fish_seen_subcommand_from forget help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and not __fish_seen_subcommand_from forget help" -f -a "forget" -d 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and not __fish_seen_subcommand_from forget help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and __fish_seen_subcommand_from forget" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and __fish_seen_subcommand_from forget" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and __fish_seen_subcommand_from forget" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and __fish_seen_subcommand_from forget" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and __fish_seen_subcommand_from help" -f -a "forget" -d 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand nodes; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l app -d 'Only events of this application, by id (app_…) or name' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l kind -d 'Only events of these kinds (repeat, or separate with commas)' -r -f -a "organisation.created\t'An organisation was created'
token.issued\t'A credential was issued'
token.revoked\t'A credential was revoked'
application.created\t'An application was created'
application.instances\t'An application\'s instances were replaced'
application.health_check\t'An application\'s health-check settings were changed'
application.removed\t'An application was removed, with its redirections'
redirection.added\t'A redirection was added'
redirection.updated\t'A redirection\'s settings were changed in place'
redirection.removed\t'A redirection was removed'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l since -d 'Only events of the last DURATION (`90s`, `15m`, `2h`, `7d`)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l limit -d 'How many events to show (the newest), 1 to 1000' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l after -d 'With --follow: start after this event id (the last one a previous run printed) instead of the newest events' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -l all -d 'Every organisation\'s events, and the admin\'s own (admin)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -s f -l follow -d 'Keep printing new events as they happen, until interrupted'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand events" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and not __fish_seen_subcommand_from create list remove help" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and not __fish_seen_subcommand_from create list remove help" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and not __fish_seen_subcommand_from create list remove help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and not __fish_seen_subcommand_from create list remove help" -f -a "create" -d 'Register a webhook: the organisation\'s events from now on are posted to URL, signed; the signing secret is shown this once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and not __fish_seen_subcommand_from create list remove help" -f -a "list" -d 'List the organisation\'s webhooks and how their deliveries stand'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and not __fish_seen_subcommand_from create list remove help" -f -a "remove" -d 'Remove a webhook; its deliveries stop'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and not __fish_seen_subcommand_from create list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from create" -l url -d 'https://HOST/PATH, or http:// to a loopback address' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from create" -l kind -d 'Only events of these kinds (repeat, or separate with commas) [default: every kind]' -r -f -a "organisation.created\t'An organisation was created'
token.issued\t'A credential was issued'
token.revoked\t'A credential was revoked'
application.created\t'An application was created'
application.instances\t'An application\'s instances were replaced'
application.health_check\t'An application\'s health-check settings were changed'
application.removed\t'An application was removed, with its redirections'
redirection.added\t'A redirection was added'
redirection.updated\t'A redirection\'s settings were changed in place'
redirection.removed\t'A redirection was removed'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from create" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from create" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from create" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from create" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from list" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from list" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from list" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from list" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from remove" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from remove" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from remove" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from remove" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from help" -f -a "create" -d 'Register a webhook: the organisation\'s events from now on are posted to URL, signed; the signing secret is shown this once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the organisation\'s webhooks and how their deliveries stand'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a webhook; its deliveries stop'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand webhooks; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and not __fish_seen_subcommand_from create list help" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and not __fish_seen_subcommand_from create list help" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and not __fish_seen_subcommand_from create list help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and not __fish_seen_subcommand_from create list help" -f -a "create" -d 'Create an organisation (admin only)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and not __fish_seen_subcommand_from create list help" -f -a "list" -d 'List the organisations your credential sees'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and not __fish_seen_subcommand_from create list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from create" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from create" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from create" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from list" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from list" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from list" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create an organisation (admin only)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the organisations your credential sees'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand orgs; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and not __fish_seen_subcommand_from create list revoke help" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and not __fish_seen_subcommand_from create list revoke help" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and not __fish_seen_subcommand_from create list revoke help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and not __fish_seen_subcommand_from create list revoke help" -f -a "create" -d 'Issue a credential for an organisation; its token and secret are shown this once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and not __fish_seen_subcommand_from create list revoke help" -f -a "list" -d 'List an organisation\'s credentials (never their secrets)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and not __fish_seen_subcommand_from create list revoke help" -f -a "revoke" -d 'Revoke a credential; it stops working at once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and not __fish_seen_subcommand_from create list revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from create" -l name -d 'What the credential is for' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from create" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from create" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from create" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from create" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from list" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from list" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from list" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from list" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from revoke" -l org -d 'The organisation, by id (orga_…) or name [default: the only one the credential sees]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from revoke" -s F -l format -d 'Output format [default: human]' -r -f -a "human\t'Sentences and tables for people'
json\t'One JSON document, for scripts'"
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from revoke" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from revoke" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from help" -f -a "create" -d 'Issue a credential for an organisation; its token and secret are shown this once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from help" -f -a "list" -d 'List an organisation\'s credentials (never their secrets)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke a credential; it stops working at once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand tokens; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l listen -d 'The control API\'s address (port 0 picks a free port; the address is logged)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l data-dir -d 'Where the store and the admin credential live [default: the user\'s data directory]' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l public-bind -d 'The address public ports bind when the config file does not say' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l config -d 'A TOML file declaring namespaces and applications' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l tls-cert -d 'Serve the control API over TLS with this PEM certificate (chain); needs --tls-key' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l tls-key -d 'The PEM private key of --tls-cert' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l drain-timeout -d 'Seconds open connections may run on after SIGTERM or SIGINT' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l threads -d 'How many threads forward connections [default: one per core]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l store -d 'Share the redirection table with other nodes through etcd: etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (cargo feature `etcd`) [default: SQLite in the data directory]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l store-ca -d 'The CA certificate (PEM) that signed etcd\'s: talk to etcd over TLS, checking it is etcd' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l store-cert -d 'This node\'s client certificate (PEM), for an etcd run with --client-cert-auth; needs --store-key' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l store-key -d 'The private key (PEM) of --store-cert' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l store-user -d 'The etcd user this node logs in as (etcd\'s auth); its password comes from --store-password-file or TCP_REDIRS_STORE_PASSWORD, never from the command line' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l store-password-file -d 'A file holding the etcd user\'s password (its first line)' -r -F
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l node -d 'This node\'s name in the fleet [default: the host name]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l namespaces -d 'Serve only these namespaces (comma-separated) [default: all]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l port-mode -d 'How public TCP ports listen: `steered` (every port on one socket per address family, steered by the kernel with BPF sk_lookup: needs Linux 5.9 and CAP_BPF with CAP_NET_ADMIN, or root), `bound` (one listening socket per port), or `auto` (steered where it can be, else bound, saying why at start)' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l node-ttl -d 'Seconds the node stays listed as up after it last reached the store' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l server -d 'The control server\'s URL [default: the profile\'s, else http://127.0.0.1:7070]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l token -d 'The API token [default: the profile\'s]' -r
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -l access-log -d 'Log one line per connection when it ends, on every port (else per namespace: access_log)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand serve" -s h -l help -d 'Print help'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "list" -d 'List the TCP redirections of an application (the default command)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "list-namespaces" -d 'List the namespaces you may add redirections in'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "add" -d 'Add a TCP redirection: a public port in a namespace, forwarded to the application'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "remove" -d 'Remove a TCP redirection; its port stops accepting at once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "update" -d 'Change a redirection\'s settings in place: open connections keep theirs, new ones get the new settings at once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "apps" -d 'Manage applications (operator): where a redirection\'s traffic goes'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "apply" -d 'Make the server match a file of applications and redirections, idempotently'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "export" -d 'Write the applications and redirections in the format of `apply`'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "link" -d 'Link an application to this directory, under an alias'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "unlink" -d 'Remove an application\'s link from this directory'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "login" -d 'Save a server and its credential as a profile, after checking them'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "logout" -d 'Forget a saved profile'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "profile" -d 'List the saved profiles, or choose the current one'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "nodes" -d 'List the gateway nodes sharing the server\'s store, up or down'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "events" -d 'Show the audit trail: who changed what, when, from where; --follow streams new events'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "webhooks" -d 'Manage webhooks: where the organisation\'s events are posted as they happen'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "orgs" -d 'Manage organisations (admin)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "tokens" -d 'Manage an organisation\'s credentials (admin)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "serve" -d 'Run the control server: the API, the port allocator, the store and the forwarding'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and not __fish_seen_subcommand_from list list-namespaces add remove update apps apply export link unlink login logout profile nodes events webhooks orgs tokens serve help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from apps" -f -a "create" -d 'Create an application with its instances'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from apps" -f -a "update" -d 'Change an application\'s health checks in place: every node follows when the command returns; its ports, connections and instances stay'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from apps" -f -a "set-instances" -d 'Replace an application\'s instances, live: open connections stay where they are'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from apps" -f -a "list" -d 'List the applications'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from apps" -f -a "remove" -d 'Remove an application and all its redirections'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from profile" -f -a "list" -d 'List the saved profiles (never their credentials)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from profile" -f -a "use" -d 'Make a saved profile the current one'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from nodes" -f -a "forget" -d 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from webhooks" -f -a "create" -d 'Register a webhook: the organisation\'s events from now on are posted to URL, signed; the signing secret is shown this once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from webhooks" -f -a "list" -d 'List the organisation\'s webhooks and how their deliveries stand'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from webhooks" -f -a "remove" -d 'Remove a webhook; its deliveries stop'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from orgs" -f -a "create" -d 'Create an organisation (admin only)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from orgs" -f -a "list" -d 'List the organisations your credential sees'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from tokens" -f -a "create" -d 'Issue a credential for an organisation; its token and secret are shown this once'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from tokens" -f -a "list" -d 'List an organisation\'s credentials (never their secrets)'
complete -c tcp-redirs -n "__fish_tcp_redirs_using_subcommand help; and __fish_seen_subcommand_from tokens" -f -a "revoke" -d 'Revoke a credential; it stops working at once'


using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'tcp-redirs' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'tcp-redirs'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'tcp-redirs' {
            [CompletionResult]::new('--app', '--app', [CompletionResultType]::ParameterName, 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]')
            [CompletionResult]::new('-a', '-a', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('--alias', '--alias', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the TCP redirections of an application (the default command)')
            [CompletionResult]::new('list-namespaces', 'list-namespaces', [CompletionResultType]::ParameterValue, 'List the namespaces you may add redirections in')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a TCP redirection: a public port in a namespace, forwarded to the application')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a TCP redirection; its port stops accepting at once')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change a redirection''s settings in place: open connections keep theirs, new ones get the new settings at once')
            [CompletionResult]::new('apps', 'apps', [CompletionResultType]::ParameterValue, 'Manage applications (operator): where a redirection''s traffic goes')
            [CompletionResult]::new('apply', 'apply', [CompletionResultType]::ParameterValue, 'Make the server match a file of applications and redirections, idempotently')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write the applications and redirections in the format of `apply`')
            [CompletionResult]::new('link', 'link', [CompletionResultType]::ParameterValue, 'Link an application to this directory, under an alias')
            [CompletionResult]::new('unlink', 'unlink', [CompletionResultType]::ParameterValue, 'Remove an application''s link from this directory')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Save a server and its credential as a profile, after checking them')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Forget a saved profile')
            [CompletionResult]::new('profile', 'profile', [CompletionResultType]::ParameterValue, 'List the saved profiles, or choose the current one')
            [CompletionResult]::new('nodes', 'nodes', [CompletionResultType]::ParameterValue, 'List the gateway nodes sharing the server''s store, up or down')
            [CompletionResult]::new('events', 'events', [CompletionResultType]::ParameterValue, 'Show the audit trail: who changed what, when, from where; --follow streams new events')
            [CompletionResult]::new('webhooks', 'webhooks', [CompletionResultType]::ParameterValue, 'Manage webhooks: where the organisation''s events are posted as they happen')
            [CompletionResult]::new('orgs', 'orgs', [CompletionResultType]::ParameterValue, 'Manage organisations (admin)')
            [CompletionResult]::new('tokens', 'tokens', [CompletionResultType]::ParameterValue, 'Manage an organisation''s credentials (admin)')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the control server: the API, the port allocator, the store and the forwarding')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;list' {
            [CompletionResult]::new('--app', '--app', [CompletionResultType]::ParameterName, 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]')
            [CompletionResult]::new('-a', '-a', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('--alias', '--alias', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;list-namespaces' {
            [CompletionResult]::new('--app', '--app', [CompletionResultType]::ParameterName, 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]')
            [CompletionResult]::new('-a', '-a', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('--alias', '--alias', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;add' {
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'The namespace to take a port in (`list-namespaces` shows them). Without it, a terminal offers the choice, and a script gets `default`')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Ask for this precise port of the namespace''s range instead of a random one')
            [CompletionResult]::new('--min-port', '--min-port', [CompletionResultType]::ParameterName, 'Pick the random port from this one up (Clever''s `minPort`) [default: the namespace''s lowest]')
            [CompletionResult]::new('--max-port', '--max-port', [CompletionResultType]::ParameterName, 'Pick the random port up to this one (Clever''s `maxPort`) [default: the namespace''s highest]')
            [CompletionResult]::new('--ports', '--ports', [CompletionResultType]::ParameterName, 'Take a range of this many consecutive public ports (TCP): public port FIRST+i goes to each instance''s port +i [default: 1]')
            [CompletionResult]::new('--last-port', '--last-port', [CompletionResultType]::ParameterName, 'Take the range from --port up to this port (TCP), instead of --ports')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Seconds an instance may take to accept before the next is tried [default: the namespace''s, 5]')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Seconds a connection may go without a byte before it is closed [default: the namespace''s, 3600]')
            [CompletionResult]::new('--half-close-timeout', '--half-close-timeout', [CompletionResultType]::ParameterName, 'Seconds a connection may stay half-closed [default: the namespace''s, 60]')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'The most connections open at once; more are refused [default: unlimited]')
            [CompletionResult]::new('--max-connections-per-second', '--max-connections-per-second', [CompletionResultType]::ParameterName, 'The most new connections per second; more are refused [default: unlimited]')
            [CompletionResult]::new('--max-datagrams-per-second', '--max-datagrams-per-second', [CompletionResultType]::ParameterName, 'UDP: the most datagrams per second from one client address; more are dropped [default: unlimited]')
            [CompletionResult]::new('--max-connections-per-client', '--max-connections-per-client', [CompletionResultType]::ParameterName, 'The most connections (UDP: flows) open at once from one client address (IPv6: its /64); more are refused [default: unlimited]')
            [CompletionResult]::new('--max-connections-per-second-per-client', '--max-connections-per-second-per-client', [CompletionResultType]::ParameterName, 'The most new connections (UDP: flows) per second from one client address (IPv6: its /64); more are refused [default: unlimited]')
            [CompletionResult]::new('--bandwidth-limit', '--bandwidth-limit', [CompletionResultType]::ParameterName, 'TCP: the most bytes per second each way, shared by all the redirection''s connections (512k, 10M, 1G: powers of 1000; 64Ki, 10Mi: of 1024) [default: unlimited]')
            [CompletionResult]::new('--proxy-protocol', '--proxy-protocol', [CompletionResultType]::ParameterName, 'Send the PROXY protocol header (v1 or v2; UDP: v2, or v2-every for every datagram) to the instance, so it sees the client''s address')
            [CompletionResult]::new('--allow', '--allow', [CompletionResultType]::ParameterName, 'Only clients in this range may connect (CIDR or address; repeat for several)')
            [CompletionResult]::new('--deny', '--deny', [CompletionResultType]::ParameterName, 'Refuse clients in this range, even when allowed (CIDR or address; repeat for several)')
            [CompletionResult]::new('--app', '--app', [CompletionResultType]::ParameterName, 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]')
            [CompletionResult]::new('-a', '-a', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('--alias', '--alias', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('--udp', '--udp', [CompletionResultType]::ParameterName, 'A UDP redirection instead of a TCP one (UDP ports are a space of their own)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;remove' {
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'The namespace the port belongs to')
            [CompletionResult]::new('--app', '--app', [CompletionResultType]::ParameterName, 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]')
            [CompletionResult]::new('-a', '-a', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('--alias', '--alias', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('--udp', '--udp', [CompletionResultType]::ParameterName, 'The port is a UDP redirection''s (TCP''s and UDP''s ports are separate)')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Do not ask for confirmation (only a terminal asks)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Do not ask for confirmation (only a terminal asks)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;update' {
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'The namespace the port belongs to')
            [CompletionResult]::new('--unset', '--unset', [CompletionResultType]::ParameterName, 'Take a setting back to the namespace''s default (repeat for several); `--allow` and `--deny` given here replace their whole list')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Seconds an instance may take to accept before the next is tried [default: the namespace''s, 5]')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Seconds a connection may go without a byte before it is closed [default: the namespace''s, 3600]')
            [CompletionResult]::new('--half-close-timeout', '--half-close-timeout', [CompletionResultType]::ParameterName, 'Seconds a connection may stay half-closed [default: the namespace''s, 60]')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'The most connections open at once; more are refused [default: unlimited]')
            [CompletionResult]::new('--max-connections-per-second', '--max-connections-per-second', [CompletionResultType]::ParameterName, 'The most new connections per second; more are refused [default: unlimited]')
            [CompletionResult]::new('--max-datagrams-per-second', '--max-datagrams-per-second', [CompletionResultType]::ParameterName, 'UDP: the most datagrams per second from one client address; more are dropped [default: unlimited]')
            [CompletionResult]::new('--max-connections-per-client', '--max-connections-per-client', [CompletionResultType]::ParameterName, 'The most connections (UDP: flows) open at once from one client address (IPv6: its /64); more are refused [default: unlimited]')
            [CompletionResult]::new('--max-connections-per-second-per-client', '--max-connections-per-second-per-client', [CompletionResultType]::ParameterName, 'The most new connections (UDP: flows) per second from one client address (IPv6: its /64); more are refused [default: unlimited]')
            [CompletionResult]::new('--bandwidth-limit', '--bandwidth-limit', [CompletionResultType]::ParameterName, 'TCP: the most bytes per second each way, shared by all the redirection''s connections (512k, 10M, 1G: powers of 1000; 64Ki, 10Mi: of 1024) [default: unlimited]')
            [CompletionResult]::new('--proxy-protocol', '--proxy-protocol', [CompletionResultType]::ParameterName, 'Send the PROXY protocol header (v1 or v2; UDP: v2, or v2-every for every datagram) to the instance, so it sees the client''s address')
            [CompletionResult]::new('--allow', '--allow', [CompletionResultType]::ParameterName, 'Only clients in this range may connect (CIDR or address; repeat for several)')
            [CompletionResult]::new('--deny', '--deny', [CompletionResultType]::ParameterName, 'Refuse clients in this range, even when allowed (CIDR or address; repeat for several)')
            [CompletionResult]::new('--app', '--app', [CompletionResultType]::ParameterName, 'The application, by id (app_…) or name [env: TCP_REDIRS_APP]')
            [CompletionResult]::new('-a', '-a', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('--alias', '--alias', [CompletionResultType]::ParameterName, 'The application linked to this directory under ALIAS (`tcp-redirs link`)')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('--udp', '--udp', [CompletionResultType]::ParameterName, 'The port is a UDP redirection''s (TCP''s and UDP''s ports are separate)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;apps' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an application with its instances')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change an application''s health checks in place: every node follows when the command returns; its ports, connections and instances stay')
            [CompletionResult]::new('set-instances', 'set-instances', [CompletionResultType]::ParameterValue, 'Replace an application''s instances, live: open connections stay where they are')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the applications')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove an application and all its redirections')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;apps;create' {
            [CompletionResult]::new('--instance', '--instance', [CompletionResultType]::ParameterName, 'An address where the application listens, HOST:PORT, optionally =WEIGHT (0 takes no new connection; 1 by default). Repeat for several')
            [CompletionResult]::new('--check', '--check', [CompletionResultType]::ParameterName, 'What a health check does: connect, expect (send --check-send, expect --check-expect) or none [default: the node''s, connect]')
            [CompletionResult]::new('--check-interval-ms', '--check-interval-ms', [CompletionResultType]::ParameterName, 'Milliseconds between two health checks of an instance [default: the node''s, 5000]')
            [CompletionResult]::new('--check-timeout-ms', '--check-timeout-ms', [CompletionResultType]::ParameterName, 'Milliseconds a health check may take, no more than the interval [default: the node''s, 2000]')
            [CompletionResult]::new('--check-rise', '--check-rise', [CompletionResultType]::ParameterName, 'Successful health checks in a row that bring a down instance up [default: the node''s, 2]')
            [CompletionResult]::new('--check-fall', '--check-fall', [CompletionResultType]::ParameterName, 'Failed health checks in a row that take an up instance down [default: the node''s, 3]')
            [CompletionResult]::new('--check-send', '--check-send', [CompletionResultType]::ParameterName, 'Bytes a health check sends once connected, in hexadecimal (50494e470d0a is PING\r\n)')
            [CompletionResult]::new('--check-expect', '--check-expect', [CompletionResultType]::ParameterName, 'Bytes the instance''s answer must start with, in hexadecimal (2b504f4e47 is +PONG); implies --check expect')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;apps;update' {
            [CompletionResult]::new('--unset', '--unset', [CompletionResultType]::ParameterName, 'Take a setting back to the node''s `[health_checks]` (repeat for several)')
            [CompletionResult]::new('--check', '--check', [CompletionResultType]::ParameterName, 'What a health check does: connect, expect (send --check-send, expect --check-expect) or none [default: the node''s, connect]')
            [CompletionResult]::new('--check-interval-ms', '--check-interval-ms', [CompletionResultType]::ParameterName, 'Milliseconds between two health checks of an instance [default: the node''s, 5000]')
            [CompletionResult]::new('--check-timeout-ms', '--check-timeout-ms', [CompletionResultType]::ParameterName, 'Milliseconds a health check may take, no more than the interval [default: the node''s, 2000]')
            [CompletionResult]::new('--check-rise', '--check-rise', [CompletionResultType]::ParameterName, 'Successful health checks in a row that bring a down instance up [default: the node''s, 2]')
            [CompletionResult]::new('--check-fall', '--check-fall', [CompletionResultType]::ParameterName, 'Failed health checks in a row that take an up instance down [default: the node''s, 3]')
            [CompletionResult]::new('--check-send', '--check-send', [CompletionResultType]::ParameterName, 'Bytes a health check sends once connected, in hexadecimal (50494e470d0a is PING\r\n)')
            [CompletionResult]::new('--check-expect', '--check-expect', [CompletionResultType]::ParameterName, 'Bytes the instance''s answer must start with, in hexadecimal (2b504f4e47 is +PONG); implies --check expect')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;apps;set-instances' {
            [CompletionResult]::new('--instance', '--instance', [CompletionResultType]::ParameterName, 'HOST:PORT[=WEIGHT], repeated for each instance')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;apps;list' {
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;apps;remove' {
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;apps;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an application with its instances')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change an application''s health checks in place: every node follows when the command returns; its ports, connections and instances stay')
            [CompletionResult]::new('set-instances', 'set-instances', [CompletionResultType]::ParameterValue, 'Replace an application''s instances, live: open connections stay where they are')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the applications')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove an application and all its redirections')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;apps;help;create' {
            break
        }
        'tcp-redirs;apps;help;update' {
            break
        }
        'tcp-redirs;apps;help;set-instances' {
            break
        }
        'tcp-redirs;apps;help;list' {
            break
        }
        'tcp-redirs;apps;help;remove' {
            break
        }
        'tcp-redirs;apps;help;help' {
            break
        }
        'tcp-redirs;apply' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The file to apply (TOML; `tcp-redirs export` writes one)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The file to apply (TOML; `tcp-redirs export` writes one)')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Say what would change, and change nothing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;export' {
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'Only this organisation, by id (orga_…) or name [default: every one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;link' {
            [CompletionResult]::new('--alias', '--alias', [CompletionResultType]::ParameterName, 'The name to use it by [default: the application''s name]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;unlink' {
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;login' {
            [CompletionResult]::new('--profile', '--profile', [CompletionResultType]::ParameterName, 'The profile to save (and make current)')
            [CompletionResult]::new('--secret', '--secret', [CompletionResultType]::ParameterName, 'The secret of the token (Clever''s OAuth form), kept with it')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;logout' {
            [CompletionResult]::new('--profile', '--profile', [CompletionResultType]::ParameterName, 'The profile to forget [default: the current one]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;profile' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the saved profiles (never their credentials)')
            [CompletionResult]::new('use', 'use', [CompletionResultType]::ParameterValue, 'Make a saved profile the current one')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;profile;list' {
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;profile;use' {
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;profile;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the saved profiles (never their credentials)')
            [CompletionResult]::new('use', 'use', [CompletionResultType]::ParameterValue, 'Make a saved profile the current one')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;profile;help;list' {
            break
        }
        'tcp-redirs;profile;help;use' {
            break
        }
        'tcp-redirs;profile;help;help' {
            break
        }
        'tcp-redirs;nodes' {
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('forget', 'forget', [CompletionResultType]::ParameterValue, 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;nodes;forget' {
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;nodes;help' {
            [CompletionResult]::new('forget', 'forget', [CompletionResultType]::ParameterValue, 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;nodes;help;forget' {
            break
        }
        'tcp-redirs;nodes;help;help' {
            break
        }
        'tcp-redirs;events' {
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('--app', '--app', [CompletionResultType]::ParameterName, 'Only events of this application, by id (app_…) or name')
            [CompletionResult]::new('--kind', '--kind', [CompletionResultType]::ParameterName, 'Only events of these kinds (repeat, or separate with commas)')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Only events of the last DURATION (`90s`, `15m`, `2h`, `7d`)')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'How many events to show (the newest), 1 to 1000')
            [CompletionResult]::new('--after', '--after', [CompletionResultType]::ParameterName, 'With --follow: start after this event id (the last one a previous run printed) instead of the newest events')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Every organisation''s events, and the admin''s own (admin)')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new events as they happen, until interrupted')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new events as they happen, until interrupted')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;webhooks' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Register a webhook: the organisation''s events from now on are posted to URL, signed; the signing secret is shown this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the organisation''s webhooks and how their deliveries stand')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a webhook; its deliveries stop')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;webhooks;create' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'https://HOST/PATH, or http:// to a loopback address')
            [CompletionResult]::new('--kind', '--kind', [CompletionResultType]::ParameterName, 'Only events of these kinds (repeat, or separate with commas) [default: every kind]')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;webhooks;list' {
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;webhooks;remove' {
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;webhooks;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Register a webhook: the organisation''s events from now on are posted to URL, signed; the signing secret is shown this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the organisation''s webhooks and how their deliveries stand')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a webhook; its deliveries stop')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;webhooks;help;create' {
            break
        }
        'tcp-redirs;webhooks;help;list' {
            break
        }
        'tcp-redirs;webhooks;help;remove' {
            break
        }
        'tcp-redirs;webhooks;help;help' {
            break
        }
        'tcp-redirs;orgs' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an organisation (admin only)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the organisations your credential sees')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;orgs;create' {
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;orgs;list' {
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;orgs;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an organisation (admin only)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the organisations your credential sees')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;orgs;help;create' {
            break
        }
        'tcp-redirs;orgs;help;list' {
            break
        }
        'tcp-redirs;orgs;help;help' {
            break
        }
        'tcp-redirs;tokens' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Issue a credential for an organisation; its token and secret are shown this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List an organisation''s credentials (never their secrets)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke a credential; it stops working at once')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;tokens;create' {
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'What the credential is for')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;tokens;list' {
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;tokens;revoke' {
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation, by id (orga_…) or name [default: the only one the credential sees]')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: human]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'tcp-redirs;tokens;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Issue a credential for an organisation; its token and secret are shown this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List an organisation''s credentials (never their secrets)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke a credential; it stops working at once')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;tokens;help;create' {
            break
        }
        'tcp-redirs;tokens;help;list' {
            break
        }
        'tcp-redirs;tokens;help;revoke' {
            break
        }
        'tcp-redirs;tokens;help;help' {
            break
        }
        'tcp-redirs;serve' {
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'The control API''s address (port 0 picks a free port; the address is logged)')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Where the store and the admin credential live [default: the user''s data directory]')
            [CompletionResult]::new('--public-bind', '--public-bind', [CompletionResultType]::ParameterName, 'The address public ports bind when the config file does not say')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'A TOML file declaring namespaces and applications')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve the control API over TLS with this PEM certificate (chain); needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'The PEM private key of --tls-cert')
            [CompletionResult]::new('--drain-timeout', '--drain-timeout', [CompletionResultType]::ParameterName, 'Seconds open connections may run on after SIGTERM or SIGINT')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'How many threads forward connections [default: one per core]')
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'Share the redirection table with other nodes through etcd: etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (cargo feature `etcd`) [default: SQLite in the data directory]')
            [CompletionResult]::new('--store-ca', '--store-ca', [CompletionResultType]::ParameterName, 'The CA certificate (PEM) that signed etcd''s: talk to etcd over TLS, checking it is etcd')
            [CompletionResult]::new('--store-cert', '--store-cert', [CompletionResultType]::ParameterName, 'This node''s client certificate (PEM), for an etcd run with --client-cert-auth; needs --store-key')
            [CompletionResult]::new('--store-key', '--store-key', [CompletionResultType]::ParameterName, 'The private key (PEM) of --store-cert')
            [CompletionResult]::new('--store-user', '--store-user', [CompletionResultType]::ParameterName, 'The etcd user this node logs in as (etcd''s auth); its password comes from --store-password-file or TCP_REDIRS_STORE_PASSWORD, never from the command line')
            [CompletionResult]::new('--store-password-file', '--store-password-file', [CompletionResultType]::ParameterName, 'A file holding the etcd user''s password (its first line)')
            [CompletionResult]::new('--node', '--node', [CompletionResultType]::ParameterName, 'This node''s name in the fleet [default: the host name]')
            [CompletionResult]::new('--namespaces', '--namespaces', [CompletionResultType]::ParameterName, 'Serve only these namespaces (comma-separated) [default: all]')
            [CompletionResult]::new('--port-mode', '--port-mode', [CompletionResultType]::ParameterName, 'How public TCP ports listen: `steered` (every port on one socket per address family, steered by the kernel with BPF sk_lookup: needs Linux 5.9 and CAP_BPF with CAP_NET_ADMIN, or root), `bound` (one listening socket per port), or `auto` (steered where it can be, else bound, saying why at start)')
            [CompletionResult]::new('--node-ttl', '--node-ttl', [CompletionResultType]::ParameterName, 'Seconds the node stays listed as up after it last reached the store')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The control server''s URL [default: the profile''s, else http://127.0.0.1:7070]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'The API token [default: the profile''s]')
            [CompletionResult]::new('--access-log', '--access-log', [CompletionResultType]::ParameterName, 'Log one line per connection when it ends, on every port (else per namespace: access_log)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'tcp-redirs;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the TCP redirections of an application (the default command)')
            [CompletionResult]::new('list-namespaces', 'list-namespaces', [CompletionResultType]::ParameterValue, 'List the namespaces you may add redirections in')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a TCP redirection: a public port in a namespace, forwarded to the application')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a TCP redirection; its port stops accepting at once')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change a redirection''s settings in place: open connections keep theirs, new ones get the new settings at once')
            [CompletionResult]::new('apps', 'apps', [CompletionResultType]::ParameterValue, 'Manage applications (operator): where a redirection''s traffic goes')
            [CompletionResult]::new('apply', 'apply', [CompletionResultType]::ParameterValue, 'Make the server match a file of applications and redirections, idempotently')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write the applications and redirections in the format of `apply`')
            [CompletionResult]::new('link', 'link', [CompletionResultType]::ParameterValue, 'Link an application to this directory, under an alias')
            [CompletionResult]::new('unlink', 'unlink', [CompletionResultType]::ParameterValue, 'Remove an application''s link from this directory')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Save a server and its credential as a profile, after checking them')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Forget a saved profile')
            [CompletionResult]::new('profile', 'profile', [CompletionResultType]::ParameterValue, 'List the saved profiles, or choose the current one')
            [CompletionResult]::new('nodes', 'nodes', [CompletionResultType]::ParameterValue, 'List the gateway nodes sharing the server''s store, up or down')
            [CompletionResult]::new('events', 'events', [CompletionResultType]::ParameterValue, 'Show the audit trail: who changed what, when, from where; --follow streams new events')
            [CompletionResult]::new('webhooks', 'webhooks', [CompletionResultType]::ParameterValue, 'Manage webhooks: where the organisation''s events are posted as they happen')
            [CompletionResult]::new('orgs', 'orgs', [CompletionResultType]::ParameterValue, 'Manage organisations (admin)')
            [CompletionResult]::new('tokens', 'tokens', [CompletionResultType]::ParameterValue, 'Manage an organisation''s credentials (admin)')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the control server: the API, the port allocator, the store and the forwarding')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcp-redirs;help;list' {
            break
        }
        'tcp-redirs;help;list-namespaces' {
            break
        }
        'tcp-redirs;help;add' {
            break
        }
        'tcp-redirs;help;remove' {
            break
        }
        'tcp-redirs;help;update' {
            break
        }
        'tcp-redirs;help;apps' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an application with its instances')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change an application''s health checks in place: every node follows when the command returns; its ports, connections and instances stay')
            [CompletionResult]::new('set-instances', 'set-instances', [CompletionResultType]::ParameterValue, 'Replace an application''s instances, live: open connections stay where they are')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the applications')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove an application and all its redirections')
            break
        }
        'tcp-redirs;help;apps;create' {
            break
        }
        'tcp-redirs;help;apps;update' {
            break
        }
        'tcp-redirs;help;apps;set-instances' {
            break
        }
        'tcp-redirs;help;apps;list' {
            break
        }
        'tcp-redirs;help;apps;remove' {
            break
        }
        'tcp-redirs;help;apply' {
            break
        }
        'tcp-redirs;help;export' {
            break
        }
        'tcp-redirs;help;link' {
            break
        }
        'tcp-redirs;help;unlink' {
            break
        }
        'tcp-redirs;help;login' {
            break
        }
        'tcp-redirs;help;logout' {
            break
        }
        'tcp-redirs;help;profile' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the saved profiles (never their credentials)')
            [CompletionResult]::new('use', 'use', [CompletionResultType]::ParameterValue, 'Make a saved profile the current one')
            break
        }
        'tcp-redirs;help;profile;list' {
            break
        }
        'tcp-redirs;help;profile;use' {
            break
        }
        'tcp-redirs;help;nodes' {
            [CompletionResult]::new('forget', 'forget', [CompletionResultType]::ParameterValue, 'Forget a node that is gone for good (admin): ports freed while it was away stop waiting for it. Refused while the node is up; a node that comes back is listed again')
            break
        }
        'tcp-redirs;help;nodes;forget' {
            break
        }
        'tcp-redirs;help;events' {
            break
        }
        'tcp-redirs;help;webhooks' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Register a webhook: the organisation''s events from now on are posted to URL, signed; the signing secret is shown this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the organisation''s webhooks and how their deliveries stand')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a webhook; its deliveries stop')
            break
        }
        'tcp-redirs;help;webhooks;create' {
            break
        }
        'tcp-redirs;help;webhooks;list' {
            break
        }
        'tcp-redirs;help;webhooks;remove' {
            break
        }
        'tcp-redirs;help;orgs' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an organisation (admin only)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the organisations your credential sees')
            break
        }
        'tcp-redirs;help;orgs;create' {
            break
        }
        'tcp-redirs;help;orgs;list' {
            break
        }
        'tcp-redirs;help;tokens' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Issue a credential for an organisation; its token and secret are shown this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List an organisation''s credentials (never their secrets)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke a credential; it stops working at once')
            break
        }
        'tcp-redirs;help;tokens;create' {
            break
        }
        'tcp-redirs;help;tokens;list' {
            break
        }
        'tcp-redirs;help;tokens;revoke' {
            break
        }
        'tcp-redirs;help;serve' {
            break
        }
        'tcp-redirs;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}

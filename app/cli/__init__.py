"""`berth`, the command line. It talks to the management API over HTTP only.

    berth [--url URL] [--token SECRET | --token-file PATH] [--json] [--timeout S] COMMAND ...

Layout, so that a new noun (routes, certs, services...) is one module and one line in
`main.NOUNS`:

    main.py     parser, connection settings, error handling and exit status
    client.py   ApiClient: JSON requests and event streams, a fresh traceparent on each
    errors.py   CliError and its subclasses: what is reported as one `berth: ...` line
    output.py   tables, times, JSON output and terminal-safe text
    sse.py      Server-Sent Events parsing and follow_events (tail now, --wait later)
    status.py, tokens.py, events.py
                one noun each: `register(commands, common)` adds its sub-commands, each
                pointing at a handler `(args, client) -> exit status`

Exit status: 0 done; 1 failed, with one line `berth: <title>: <description>` on stderr;
2 bad usage (argparse); 130 interrupted with Ctrl-C.
"""

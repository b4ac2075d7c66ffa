"""Sans-I/O SIP core: messages, framing, transactions, dialogs and digest authentication.

Nothing in this package opens a socket or touches the reactor. The transport shells feed
bytes to `framing`, hand the messages to `transaction.TransactionLayer`, and carry out the
actions it returns (send bytes, start and cancel timers).
"""

"""STM stress NF: every packet moves an amount between two accounts.

A UDP packet's source port picks the account to debit, its destination port
the account to credit, and its first payload byte the amount.  Each handler
also reads *every* account and checks the total: if a transaction ever saw a
state that no serial execution produces (a torn transfer), the check raises
and the run counts a handler error.  The exit handler emits the final
balances and the merged counters as one frame, for the test to check.
"""

import struct

import nfos

ACCOUNTS = 8
START = 1_000_000

nf = nfos.NF("transfer", devices=["in", "out"], params={"staleness": nfos.Duration(0)})


class Account(nfos.Record):
    balance: nfos.i64
    moves: nfos.u64


class Moved(nfos.Record):
    amount: nfos.i64
    transfers: nfos.i64
    biggest: nfos.i64


@nf.init
def setup(p):
    nf.state.accounts = nfos.Vector(Account, ACCOUNTS)
    nf.state.moved = nfos.DistributedObj(Moved, merge={"amount": "sum", "transfers": "sum", "biggest": "max"},
                                         max_staleness=p.staleness)
    for i in range(ACCOUNTS):
        nf.state.accounts[i].balance = START


@nf.orphan
def transfer(pkt):
    accounts = nf.state.accounts
    src = accounts[pkt.udp.sport % ACCOUNTS]
    dst = accounts[pkt.udp.dport % ACCOUNTS]
    amount = pkt.payload[0]
    src.balance -= amount
    dst.balance += amount
    src.moves += 1
    c = nf.state.moved.update()
    c.amount += amount
    c.transfers += 1
    if amount > c.biggest:
        c.biggest = amount
    total = sum(accounts[i].balance for i in range(ACCOUNTS))
    if total != ACCOUNTS * START:
        raise AssertionError(f"inconsistent snapshot: total {total}")
    merged = nf.state.moved.read()
    if merged.transfers < 1:
        raise AssertionError("merged counters miss this transaction's own update")
    pkt.send("out")


@nf.exit
def report():
    accounts = nf.state.accounts
    m = nf.state.moved.read()
    body = struct.pack(f"<{ACCOUNTS}q{ACCOUNTS}Q3q", *(accounts[i].balance for i in range(ACCOUNTS)),
                       *(accounts[i].moves for i in range(ACCOUNTS)), m.amount, m.transfers, m.biggest)
    nf.emit(b"\xff" * 12 + b"\x88\xb5" + body, "out")

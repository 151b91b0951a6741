"""The guarantee checker: run each guarantee's workload under faults and measure the seed's
trade-off matrix (speed, duplication, loss) — on Odradek or on any Kafka cluster.

    history.py      the JSON-lines history (Jepsen's op shape)
    analysis.py     the run's numbers; the sink workload's lost-write, duplicate, G1a, poll order
    jepsen.py       Jepsen's Kafka analysers under Jepsen's names, with its allowed types
    wire.py         just enough Kafka wire format to rewrite advertised addresses
    proxy.py        the fault proxy: cut after forwarding a request, delay, drop
    local_broker.py `odradek serve` as a child process (kill -9, SIGSTOP)
    faults.py       fault names, the seeded schedule, the injector
    worker.py       the processor process (odradek.client.Processor into SQLite)
    workload.py     producer, processor supervisor, final drain; the transactional workload
    txn.py          a run of the transactional workload (`--workload txn`)
    measures.py     per phase: speed, latency, batch costs, recovery after each fault
    speed_order.py  each guarantee's settings; why the measured speed order differs from the seed
    runner.py       one run per guarantee: a fault-free phase, then a fault phase
    report.py       terminal table, JSON, self-contained HTML

It never imports the broker: it starts `odradek serve` as a process and speaks Kafka to it.
"""

from odradek.check.analysis import ANOMALIES, Analysis, Case, analyse
from odradek.check.history import Op, read_history
from odradek.check.proxy import FaultProxy
from odradek.check.runner import CheckOptions, RunResult, run_check

__all__ = [
    "ANOMALIES",
    "Analysis",
    "Case",
    "CheckOptions",
    "FaultProxy",
    "Op",
    "RunResult",
    "analyse",
    "read_history",
    "run_check",
]

"""The simulator's cluster mode: a controller and three brokers (the real code) on the
simulated loop, network and disks, a topic of replication factor 3 with min.insync.replicas=2,
an idempotent acks=all aiokafka producer and a consumer; brokers killed and restarted (with and
without power loss), network cuts between brokers and to the controller, the controller killed
and restarted."""

from __future__ import annotations

from click.testing import CliRunner

from odradek.cli.main import cli
from odradek.sim import SimOptions, run_seed
from odradek.sim.cluster import CLUSTER_FAULTS, CLUSTER_LOAD


def _cluster(seed: int, seconds: float) -> SimOptions:
    return SimOptions(
        seed=seed, seconds=seconds, faults=CLUSTER_FAULTS, load=CLUSTER_LOAD, brokers=3
    )


def test_a_few_seeds_keep_every_replication_invariant_through_every_cluster_fault() -> None:
    faults: dict[str, int] = {}
    for seed in (1, 2, 3):
        result = run_seed(_cluster(seed, 10))
        assert result.ok, f"{result.violation}\n" + "\n".join(result.trace[-30:])
        assert result.stats["acknowledged"] > 300
        assert result.stats["reads"] > 0
        assert result.stats["restarts"] == result.stats.get("fault_crash", 0) + result.stats.get(
            "fault_power-loss", 0
        )
        # The end-of-run checks ran: replicas converged and were compared.
        assert "replicas converged" in result.trace[-2]
        assert "replicas agree" in result.trace[-1]
        for kind in CLUSTER_FAULTS:
            faults[kind] = faults.get(kind, 0) + result.stats.get(f"fault_{kind}", 0)
    assert all(faults.values()), faults


def test_without_fsync_a_power_loss_may_lose_writes_and_the_run_still_passes() -> None:
    result = run_seed(
        SimOptions(
            seed=2,
            seconds=8,
            faults=("power-loss",),
            load=CLUSTER_LOAD,
            brokers=3,
            acks_all_fsync=False,
        )
    )
    assert result.ok, result.violation
    assert result.stats.get("fault_power-loss", 0) > 0
    assert "--no-fsync" in result.options.command()


def test_one_cluster_seed_replays_identically() -> None:
    first = run_seed(_cluster(4, 6))
    second = run_seed(_cluster(4, 6))
    assert first.ok, first.violation
    assert first.trace == second.trace
    assert first.fingerprint == second.fingerprint
    assert first.stats == second.stats
    # Brokers talked to the controller and to each other over the simulated network.
    assert any("broker-1->controller:9093" in line for line in first.trace)
    assert any("broker-2->broker-1:9092" in line for line in first.trace)


def test_the_cli_runs_a_cluster_and_names_it_in_the_replay_command() -> None:
    result = CliRunner().invoke(cli, ["sim", "--seed", "2", "--seconds", "4", "--brokers", "3"])
    assert result.exit_code == 0, result.output
    assert "seed 2: ok" in result.output
    assert _cluster(2, 4).command() == "odradek sim --seed 2 --seconds 4 --brokers 3"


def test_cluster_mode_rejects_faults_it_does_not_run() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["sim", "--seed", "1", "--brokers", "3", "--faults", "reset"])
    assert result.exit_code == 2
    assert "a cluster run knows crash, power-loss, cut, controller-crash" in result.output
    result = runner.invoke(cli, ["sim", "--seed", "1", "--faults", "controller-crash"])
    assert result.exit_code == 2
    assert "a one-broker run knows" in result.output
    result = runner.invoke(cli, ["sim", "--seed", "1", "--brokers", "2"])
    assert result.exit_code == 2
    assert "needs 3 or more" in result.output

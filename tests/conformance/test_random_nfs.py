"""Property: random NFs give the sequential run's results with 2-4 workers (issue 13, point 4).

Each hypothesis example is one generated NF file hosting ``PROGRAMS`` independent
random programs (rnf_gen.py: program P owns its structures and handles the
packets to 10.1.0.P), replayed on a random trace (from a seed) sequentially and
with 2-4 workers at a random batch size 1..32.  Programs mix Vector, Map,
Allocator, DistributedObj and Counter operations driven by packet bytes, with
packet, new-set, expiry, orphan, periodic and exit handlers, over tiny
structures (1-element Vectors, 1-bucket Maps, Allocators as small as the key
space) and hot destinations, so transactions conflict and retry.  Every
device's output must be the same multiset of frames; the exit handler dumps
every structure of every program onto ``dump``, so that includes the final
state.  What counts as a random NF is a program: the default run checks
``DEFAULT_EXAMPLES * PROGRAMS`` = 40 x 30 = 1,200 of them (about 15 s on 2
cores), the slow run 334 x 30 = 10,020 (a few minutes).  A subset is also recorded with
``--record-commits`` and re-executed in its commit order (``nfos verify``): 10 files of 10
programs by default, 100 files (1,000 programs) in the slow run::

    PYTHONPATH=src python3 -m pytest -p no:cacheprovider -m slow tests/conformance/test_random_nfs.py

A violation names the differing frames, the programs they come from (their
source) and a reproducer: the saved NF file, the trace seed, workers and batch
(``rnf_gen.compare(...)``).
"""

from __future__ import annotations

import pytest
import rnf_gen
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

PROGRAMS = 30
DEFAULT_EXAMPLES = 40
SLOW_EXAMPLES = 10_000 // PROGRAMS + 1

#: no shrinking: one run pair is ~0.2 s and shrinking a 30-program NF took over 5 minutes; the
#: report names the differing frames, their programs' source and the saved file + trace seed.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)
run_args = st.tuples(st.integers(0, 2**32 - 1), st.integers(100, 600), st.integers(2, 4), st.integers(1, 32))


def _check(tmp_path_factory: pytest.TempPathFactory, spec: rnf_gen.Spec,
           args: tuple[int, int, int, int]) -> str:
    seed, packets, workers, batch = args
    return rnf_gen.check(spec, seed, packets, workers, batch, str(tmp_path_factory.mktemp("rnf")))


@settings(max_examples=DEFAULT_EXAMPLES, deadline=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(rnf_gen.specs(PROGRAMS), run_args)
def test_random_nfs_parallel_equals_sequential(tmp_path_factory, spec, args):
    problem = _check(tmp_path_factory, spec, args)
    assert not problem, problem


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, deadline=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(rnf_gen.specs(PROGRAMS), run_args)
def test_random_nfs_slow(tmp_path_factory, spec, args):
    problem = _check(tmp_path_factory, spec, args)
    assert not problem, problem


#: the commit order re-executed (nfos verify) for a subset: 10 files of 10 programs
RECORDED_PROGRAMS = 10
RECORDED_EXAMPLES = 10


@settings(max_examples=RECORDED_EXAMPLES, deadline=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(rnf_gen.specs(RECORDED_PROGRAMS), run_args)
def test_random_nfs_recorded_commit_order_verifies(tmp_path_factory, spec, args):
    """Recorded with 2-4 workers (--record-commits), re-executed sequentially in that commit
    order (nfos verify): the output and every structure's final bytes are the run's."""
    seed, packets, workers, batch = args
    problem = rnf_gen.check_recorded(spec, seed, packets, workers, batch, str(tmp_path_factory.mktemp("rnfv")))
    assert not problem, problem


@pytest.mark.slow
@settings(max_examples=1_000 // RECORDED_PROGRAMS, deadline=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(rnf_gen.specs(RECORDED_PROGRAMS), run_args)
def test_random_nfs_recorded_slow(tmp_path_factory, spec, args):
    """1,000 random NFs (100 files of 10) recorded and verified."""
    seed, packets, workers, batch = args
    problem = rnf_gen.check_recorded(spec, seed, packets, workers, batch, str(tmp_path_factory.mktemp("rnfv")))
    assert not problem, problem

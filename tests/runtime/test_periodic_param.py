"""A periodic handler's interval can come from a parameter: ``@nf.periodic("report_every")``."""

import pytest

from nfos.runtime.session import LoadError
from nfos.testing import Harness

NF = """
import nfos
nf = nfos.NF("reporter", devices=["lan", "wan"],
             params={"report_every": nfos.param(nfos.Duration, nfos.seconds(1), "report interval")})

@nf.periodic("report_every")
def report():
    nf.emit(nfos.now().to_bytes(8, "big"), "wan")
"""


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("params,advance,due", [
    ({}, 3, [1, 2, 3]),
    ({"report_every": "5s"}, 20, [5, 10, 15, 20]),
    ({"report_every": "250ms"}, 1, [0.25, 0.5, 0.75, 1]),
])
def test_interval_from_a_parameter(write_nf, workers, params, advance, due):
    with Harness(write_nf(NF), workers=workers, params=params) as h:
        out = h.advance(advance)
    assert out == [("wan", round(t * 1e9).to_bytes(8, "big")) for t in due]


def test_an_unknown_parameter_name_is_a_one_line_error(write_nf):
    path = write_nf(NF.replace('@nf.periodic("report_every")', '@nf.periodic("report_evry")'))
    with pytest.raises(LoadError, match=r"nf\.py:5: @nf\.periodic\('report_evry'\): no parameter 'report_evry' "
                                        r"\(parameters: report_every\)$"):
        Harness(path).__enter__()


def test_a_zero_interval_parameter_is_refused(write_nf):
    with pytest.raises(LoadError, match=r"a periodic interval \(parameter 'report_every'\) must be > 0$"):
        Harness(write_nf(NF), params={"report_every": "0s"}).__enter__()

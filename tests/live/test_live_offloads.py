"""Offloads at the kernel's defaults (issue 12 point 7): a 10 MB HTTP download through the firewall
(bump in the wire) and through the router-mode NAT, with TSO/GSO/GRO left as the kernel sets them on
every veth — TCP super-frames of up to 64 KiB reach the NF whole, with their segment size and
checksum request (PACKET_VNET_HDR), and leave with them: the kernel segments and checksums them.

Real tools: ``ip`` (namespaces, veths, addresses), ``ethtool -k`` (the defaults are on; ``-K tx
off`` for an output device that cannot checksum), ``python3 -m http.server`` (the WAN web server),
``curl`` (the LAN client), ``sha256sum`` (the content)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from live.conftest import Wire, need, wait_until
from live.test_live_nat import WEB, Routed

SIZE = 10_000_000


def offload(lab, ns: str, dev: str, feature: str) -> str:
    """ethtool -k's value ('on'/'off') of a feature of a device."""
    out = lab.run(ns, "ethtool", "-k", dev).stdout
    line = next(ln for ln in out.splitlines() if ln.strip().startswith(feature + ":"))
    return line.split(":", 1)[1].split()[0]


def serve_big_file(lab, ns: str, ip: str, tmp_path) -> str:
    """A 10 MB file of random bytes behind python3 -m http.server in ``ns``; returns its sha256."""
    www = tmp_path / "www"
    www.mkdir()
    lab.sh("sh", "-c", f"head -c {SIZE} /dev/urandom > {www / 'big.bin'}")
    lab.spawn(ns, sys.executable, "-m", "http.server", "8080", "--bind", ip, "--directory", str(www),
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: lab.run(ns, "curl", "-s", "-o", "/dev/null", f"http://{ip}:8080/",
                                      check=False).returncode == 0, timeout=10), "the web server did not start"
    return lab.sh("sha256sum", str(www / "big.bin")).stdout.split()[0]


def download(lab, ns: str, ip: str, tmp_path) -> str:
    """curl the file from ``ns``; returns the sha256 of what arrived."""
    got = tmp_path / "got.bin"
    r = lab.run(ns, "curl", "-s", "-S", "--connect-timeout", "15", "-m", "90", "-o", str(got),
                f"http://{ip}:8080/big.bin", check=False, timeout=100)
    assert r.returncode == 0, r.stderr
    assert got.stat().st_size == SIZE
    return lab.sh("sha256sum", str(got)).stdout.split()[0]


def check_stats(stats: dict) -> None:
    assert stats["gso_frames"] > 0, "no TCP super-frame reached the NF: the veths' offloads were off"
    assert stats["oversize"] == 0 and stats["tx_errors"] == 0 and stats["handler_errors"] == 0
    assert stats["checksums_offloaded"] > 0 and stats["checksums_completed"] == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_firewall_10mb_download_with_kernel_default_offloads(lab, nfos_live, tmp_path, workers):
    need("curl", "ethtool")
    lab.kernel_defaults = True
    wire = Wire(lab)
    for ns, dev in ((wire.lan, "h0"), (wire.wan, "h0"), (wire.box, "lan0"), (wire.box, "wan0")):
        assert offload(lab, ns, dev, "tcp-segmentation-offload") == "on"   # the kernel's defaults
        assert offload(lab, ns, dev, "generic-segmentation-offload") == "on"
    run = nfos_live(wire.box, "firewall.py", wire.ifaces, workers=workers)
    want = serve_big_file(lab, wire.wan, "192.0.2.2", tmp_path)
    run.wait_ready()
    assert download(lab, wire.lan, "192.0.2.2", tmp_path) == want
    stats = run.stop()
    check_stats(stats)
    assert stats["packets_out"]["lan"] > 0 and stats["packets_out"]["wan"] > 0


@pytest.mark.parametrize("workers", [1, 2])
def test_nat_10mb_download_with_kernel_default_offloads(lab, nfos_live, tmp_path, workers):
    need("curl", "ethtool")
    lab.kernel_defaults = True
    net = Routed(lab)
    assert offload(lab, net.wan, "h0", "tcp-segmentation-offload") == "on"
    run = nfos_live(net.box, "nat.py", net.ifaces, workers=workers, params=net.params("endpoint"))
    want = serve_big_file(lab, net.wan, WEB, tmp_path)
    run.wait_ready()
    # the NAT rewrites each super-frame's addresses and ports (and MACs, TTL): its segments are valid
    assert download(lab, net.lan, WEB, tmp_path) == want
    stats = run.stop()
    check_stats(stats)


def test_nat_download_out_of_devices_that_cannot_checksum(lab, nfos_live, tmp_path):
    """The NAT box's veths with checksum offload off (so no TSO either): the kernel segments the
    super-frames and completes their checksums in software from the pseudo-header sums the NAT
    rewrote; a wrong sum would be a bad checksum the receiving host drops, and the download would
    not finish."""
    need("curl", "ethtool")
    lab.kernel_defaults = True
    net = Routed(lab)
    for dev in ("lan0", "wan0"):
        lab.run(net.box, "ethtool", "-K", dev, "tx", "off")
        assert offload(lab, net.box, dev, "tx-checksumming") == "off"
        assert offload(lab, net.box, dev, "tx-tcp-segmentation") == "off"
    run = nfos_live(net.box, "nat.py", net.ifaces, workers=1, params=net.params("endpoint"))
    want = serve_big_file(lab, net.wan, WEB, tmp_path)
    run.wait_ready()
    assert download(lab, net.lan, WEB, tmp_path) == want
    stats = run.stop()
    check_stats(stats)

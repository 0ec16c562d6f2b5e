import risk_monitor


def test_package_has_version() -> None:
    assert risk_monitor.__version__

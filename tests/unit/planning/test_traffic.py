"""`--traffic "blue=90 green=10"` and `--mirror-traffic "green=10"`: parsed, then checked against
the endpoint's deployments, with messages that say how to fix them."""

from __future__ import annotations

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.planning.traffic import format_traffic, parse_traffic, validate_mirror, validate_traffic

DEPLOYMENTS = ("blue", "green", "shadow")


@pytest.mark.parametrize("text", ["blue=90 green=10", "blue=90,green=10", " blue=90 ,  green=10 ", "blue=90\tgreen=10"])
def test_parse_azure_cli_form_and_commas(text):
    assert parse_traffic(text) == {"blue": 90, "green": 10}


def test_parse_keeps_the_order_written_and_formats_back():
    shares = parse_traffic("green=10 blue=90")
    assert list(shares) == ["green", "blue"]
    assert format_traffic(shares) == "green=10 blue=90"
    assert parse_traffic("green=0") == {"green": 0}


@pytest.mark.parametrize("text, expected", [
    ("", "no traffic given: write <deployment>=<percent> pairs separated by spaces, e.g. 'blue=90 green=10'"),
    ("blue", "traffic 'blue' is not <deployment>=<percent>; write e.g. 'blue=90 green=10'"),
    ("blue=", "traffic 'blue=' is not <deployment>=<percent>"),
    ("=90", "traffic '=90' is not <deployment>=<percent>"),
    ("blue=90%", "traffic 'blue=90%': '90%' is not a whole percent; write a number from 0 to 100 without '%'"),
    ("blue=12.5 green=87.5", "traffic 'blue=12.5': '12.5' is not a whole percent"),
    ("blue=-5", "traffic 'blue=-5': '-5' is not a whole percent"),
    ("blue=50 blue=50", "traffic names deployment 'blue' twice (50 and 50); give each deployment one share"),
    ("blue_1=100", "traffic 'blue_1=100': 'blue_1' is not a valid deployment name"),
])
def test_parse_errors(text, expected):
    with pytest.raises(InvalidSpecError) as info:
        parse_traffic(text)
    assert info.value.message.startswith(expected)


def test_parse_mirror_names_the_option():
    with pytest.raises(InvalidSpecError) as info:
        parse_traffic("green", what="mirror traffic")
    assert info.value.message == "mirror traffic 'green' is not <deployment>=<percent>; write e.g. 'green=10'"


def test_valid_traffic():
    assert validate_traffic({"blue": 90, "green": 10}, DEPLOYMENTS) == {"blue": 90, "green": 10}
    assert validate_traffic({"blue": 100}, DEPLOYMENTS) == {"blue": 100}
    assert validate_traffic({"blue": 0, "green": 0}, DEPLOYMENTS) == {"blue": 0, "green": 0}  # no live traffic
    assert validate_traffic({}, DEPLOYMENTS) == {}


@pytest.mark.parametrize("traffic, deployments, expected", [
    ({"blue": 90}, DEPLOYMENTS,
     "the shares add up to 90 (blue=90); they must add up to 100 (or all be 0, which sends no traffic); set every "
     "deployment's share, e.g. 'blue=90 green=10'"),
    ({"blue": 60, "green": 60}, DEPLOYMENTS, "the shares add up to 120 (blue=60 green=60)"),
    ({"blue": 90, "red": 10}, DEPLOYMENTS,
     "traffic names 'red', which is not a deployment of this endpoint (its deployments: blue, green, shadow); create "
     "the deployment first, or fix the name"),
    ({"blue": 100}, (), "traffic names 'blue', which is not a deployment of this endpoint (its deployments: none yet)"),
    ({"a1b": 50, "c2d": 50}, DEPLOYMENTS, "traffic names 'a1b', 'c2d', which are not deployments of this endpoint"),
    ({"blue": 101, "green": -1}, DEPLOYMENTS, "the share of 'blue' is 101; a share is a whole percent from 0 to 100; "
                                              "the share of 'green' is -1"),
    ({"blue": True}, DEPLOYMENTS, "the share of 'blue' is True"),
])
def test_invalid_traffic(traffic, deployments, expected):
    with pytest.raises(InvalidSpecError) as info:
        validate_traffic(traffic, deployments)
    assert info.value.message.startswith(expected)
    assert info.value.details["field"] == "traffic"


def test_unknown_names_and_a_bad_sum_are_both_said():
    with pytest.raises(InvalidSpecError) as info:
        validate_traffic({"red": 10}, DEPLOYMENTS)
    assert "'red', which is not a deployment" in info.value.message
    assert "the shares add up to 10" in info.value.message


def test_valid_mirror():
    traffic = {"blue": 100, "green": 0}
    assert validate_mirror({"green": 10}, traffic, DEPLOYMENTS) == {"green": 10}
    assert validate_mirror({"shadow": 50}, traffic, DEPLOYMENTS) == {"shadow": 50}
    assert validate_mirror({}, traffic, DEPLOYMENTS) == {}
    # 0 % turns the mirror off, whatever the deployment's traffic.
    assert validate_mirror({"blue": 0}, traffic, DEPLOYMENTS) == {"blue": 0}


@pytest.mark.parametrize("mirror, traffic, expected", [
    ({"green": 10, "shadow": 10}, {"blue": 100},
     "mirror_traffic names 2 deployments (green, shadow); traffic can be mirrored to one deployment only"),
    ({"green": 51}, {"blue": 100}, "the mirror share of 'green' is 51; a mirror copies a whole percent from 0 to 50 "
                                   "of the live requests"),
    ({"green": 10}, {"blue": 90, "green": 10},
     "'green' has 10% of the live traffic, so it cannot also be the mirror; set its traffic to 0 first (e.g. "
     "'blue=100 green=0'), or mirror another deployment"),
    ({"red": 10}, {"blue": 100}, "mirror traffic names 'red', which is not a deployment of this endpoint"),
])
def test_invalid_mirror(mirror, traffic, expected):
    with pytest.raises(InvalidSpecError) as info:
        validate_mirror(mirror, traffic, DEPLOYMENTS)
    assert info.value.message.startswith(expected)
    assert info.value.details["field"] == "mirror_traffic"


def test_cli_round_trip_of_an_update():
    """`update --traffic "blue=0 green=100" --mirror-traffic "blue=20"`: the old live deployment becomes the mirror."""
    traffic = validate_traffic(parse_traffic("blue=0 green=100"), DEPLOYMENTS)
    assert validate_mirror(parse_traffic("blue=20", what="mirror traffic"), traffic, DEPLOYMENTS) == {"blue": 20}

from __future__ import annotations

from cible.core.catalog.queries import all_series, get_size
from cible.core.planning.quotas import (
    NodeUse,
    QuotaLimits,
    Usage,
    list_usage,
    localized_family_name,
    min_nodes_error,
    nodes_that_fit,
    usage_of,
)

DS = "standardDSv2Family"
NC = "standardNCSv3Family"


def fit(limits, usage, *, family=DS, vcpus=4, low=False, wanted=1):
    return nodes_that_fit(limits, usage, family=family, vcpus_per_node=vcpus, low_priority=low, wanted=wanted)


def test_usage_counts_dedicated_per_family_and_low_priority_apart():
    usage = usage_of([NodeUse(DS, 4), NodeUse(DS, 4), NodeUse(NC, 6), NodeUse(DS, 8, low_priority=True)])
    assert usage.per_family == {DS: 8, NC: 6}
    assert usage.total == 14
    assert usage.low_priority == 8
    assert usage_of([]) == Usage({}, 0, 0)


def test_a_partial_fit_says_which_family_quota_binds_and_by_how_much():
    limits = QuotaLimits(per_family={DS: 10})
    n, reason = fit(limits, Usage({DS: 4}, 4, 0), wanted=3)
    assert n == 1
    assert reason == (
        "quota: standardDSv2Family dedicated vCPUs: 4 of 10 in use, room for 1 of 3; "
        "2 more nodes of 4 vCPUs need 8 (raise it with `cible quota request`)"
    )


def test_no_room_at_all_names_family_use_limit_and_need():
    n, reason = fit(QuotaLimits(per_family={DS: 10}), Usage({DS: 8}, 8, 0), wanted=1)
    assert n == 0
    assert reason == (
        "quota: standardDSv2Family dedicated vCPUs: 8 of 10 in use, "
        "1 more node of 4 vCPUs needs 4 (raise it with `cible quota request`)"
    )


def test_everything_fits_gives_no_reason():
    assert fit(QuotaLimits(total_vcpus=100, per_family={DS: 40}), Usage({DS: 8}, 8, 0), wanted=3) == (3, None)
    assert fit(QuotaLimits(per_family={DS: 12}), Usage({}, 0, 0), wanted=3) == (3, None)  # exactly full


def test_total_dedicated_quota_binds_before_a_roomier_family_quota():
    # DS has room for 5 more nodes, but other families already use most of the regional total.
    limits = QuotaLimits(total_vcpus=24, per_family={DS: 20, NC: 24})
    n, reason = fit(limits, Usage({NC: 18}, 18, 0), wanted=3)
    assert n == 1
    assert reason.startswith("quota: total dedicated vCPUs: 18 of 24 in use, room for 1 of 3; ")


def test_family_is_named_when_it_binds_as_tightly_as_the_total():
    n, reason = fit(QuotaLimits(total_vcpus=8, per_family={DS: 8}), Usage({}, 0, 0), wanted=3)
    assert n == 2
    assert reason.startswith("quota: standardDSv2Family dedicated vCPUs: 0 of 8 in use")


def test_low_priority_nodes_only_check_the_low_priority_quota():
    # The family and the total are full; low-priority nodes do not count against them.
    limits = QuotaLimits(total_vcpus=8, low_priority_vcpus=16, per_family={DS: 8})
    usage = Usage({DS: 8}, 8, 4)
    assert fit(limits, usage, low=True, wanted=3) == (3, None)
    n, reason = fit(limits, usage, low=True, wanted=4)
    assert n == 3
    assert reason.startswith("quota: low-priority vCPUs: 4 of 16 in use, room for 3 of 4; 1 more node")
    # ... and the low-priority quota does not limit dedicated nodes.
    assert fit(QuotaLimits(low_priority_vcpus=0), Usage({}, 0, 0), wanted=2) == (2, None)


def test_no_limit_means_unlimited_and_an_unlisted_family_has_no_family_limit():
    assert fit(QuotaLimits(), Usage({DS: 1000}, 1000, 1000), wanted=50) == (50, None)
    assert fit(QuotaLimits(), Usage({}, 0, 1000), low=True, wanted=50) == (50, None)
    assert fit(QuotaLimits(per_family={NC: 0}), Usage({}, 0, 0), family=DS, wanted=2) == (2, None)


def test_use_above_a_lowered_limit_fits_nothing_rather_than_a_negative_count():
    n, reason = fit(QuotaLimits(per_family={DS: 8}), Usage({DS: 16}, 16, 0), wanted=2)
    assert n == 0
    assert "16 of 8 in use" in reason


def test_zero_wanted_or_zero_vcpus_needs_no_quota():
    assert fit(QuotaLimits(per_family={DS: 0}), Usage({}, 0, 0), wanted=0) == (0, None)
    assert fit(QuotaLimits(per_family={DS: 0}), Usage({}, 0, 0), vcpus=0, wanted=2) == (2, None)


def test_min_nodes_error_looks_at_the_limit_not_at_current_use():
    limits = QuotaLimits(total_vcpus=32, per_family={DS: 10})
    busy = Usage({DS: 10}, 10, 0)
    # 2 × 4 = 8 fits under 10 someday, however busy the family is now.
    assert min_nodes_error(limits, busy, family=DS, vcpus_per_node=4, low_priority=False, count=2,
                           what="compute cluster cpu: min_instances 2") is None
    error = min_nodes_error(limits, busy, family=DS, vcpus_per_node=4, low_priority=False, count=3,
                            what="compute cluster cpu: min_instances 3")
    assert error == (
        "compute cluster cpu: min_instances 3 needs 12 vCPUs (3 nodes of 4), above the "
        "standardDSv2Family dedicated vCPU quota of 10, so it could never start "
        "(raise it with `cible quota request`)"
    )


def test_min_nodes_error_checks_the_total_and_the_low_priority_limits_too():
    limits = QuotaLimits(total_vcpus=6, low_priority_vcpus=2)
    empty = Usage({}, 0, 0)
    error = min_nodes_error(limits, empty, family=NC, vcpus_per_node=6, low_priority=False, count=2,
                            what="compute cluster gpu: min_instances 2")
    assert "above the total dedicated vCPU quota of 6" in error
    error = min_nodes_error(limits, empty, family=DS, vcpus_per_node=4, low_priority=True, count=1,
                            what="compute instance dev")
    assert error.startswith("compute instance dev needs 4 vCPUs (1 node of 4), above the low-priority vCPU quota of 2")
    assert min_nodes_error(QuotaLimits(), empty, family=DS, vcpus_per_node=4, low_priority=False, count=100,
                           what="x") is None
    assert min_nodes_error(limits, empty, family=DS, vcpus_per_node=4, low_priority=False, count=0, what="x") is None


def test_limits_from_stored_scopes():
    limits = QuotaLimits.from_scopes({"total": 100, "low_priority": 50, DS: 24})
    assert limits == QuotaLimits(total_vcpus=100, low_priority_vcpus=50, per_family={DS: 24})
    assert QuotaLimits.from_scopes({}) == QuotaLimits()


def test_localized_family_names_are_azures_row_labels():
    assert localized_family_name("standardDSv2Family") == "Standard DSv2 Family Cluster Dedicated vCPUs"
    assert localized_family_name("standardNCSv3Family") == "Standard NCSv3 Family Cluster Dedicated vCPUs"
    assert localized_family_name("standardHBrsv2Family") == "Standard HBrsv2 Family Cluster Dedicated vCPUs"
    # Families Azure itself spells with spaces are kept as they are.
    assert localized_family_name("Standard NCASv3_T4 Family") == "Standard NCASv3_T4 Family Cluster Dedicated vCPUs"


def test_every_catalog_family_gets_a_readable_name():
    for row in all_series().values():
        name = localized_family_name(row["family"])
        assert name.startswith("Standard ") and name.endswith(" Family Cluster Dedicated vCPUs"), name


def test_list_usage_rows_have_azures_shape_and_order():
    limits = QuotaLimits(total_vcpus=24, per_family={DS: 10})
    usage = usage_of([NodeUse(DS, 4), NodeUse(NC, 6, low_priority=True)])
    rows = list_usage(limits, usage, [DS, NC], location="local")
    assert [r["name"]["value"] for r in rows] == [
        "Total Cluster Dedicated Regional vCPUs", DS, NC, "Total Cluster LowPriority Regional vCPUs"
    ]
    total, ds, nc, low = rows
    assert ds == {
        "id": "/subscriptions/local/providers/Microsoft.MachineLearningServices/locations/local/usages/"
              "standardDSv2Family",
        "amlWorkspaceLocation": "local",
        "type": "Microsoft.MachineLearningServices/vmFamily/usages",
        "unit": "Count",
        "currentValue": 4,
        "limit": 10,
        "name": {"value": DS, "localizedValue": "Standard DSv2 Family Cluster Dedicated vCPUs"},
    }
    assert total["type"] == "Microsoft.MachineLearningServices/dedicatedCores/usages"
    assert total["id"].endswith("/usages/Total_Cluster_Dedicated_Regional_vCPUs")
    assert (total["currentValue"], total["limit"]) == (4, 24)
    assert total["name"]["localizedValue"] == "Total Cluster Dedicated Regional vCPUs"
    # Low-priority use counts only on its own row; no limit is Azure's -1.
    assert (nc["currentValue"], nc["limit"]) == (0, -1)
    assert low["type"] == "Microsoft.MachineLearningServices/lowPriorityCores/usages"
    assert (low["currentValue"], low["limit"]) == (6, -1)


def test_list_usage_keeps_families_in_use_or_limited_that_the_list_lacks():
    limits = QuotaLimits(per_family={"standardFSv2Family": 8})
    rows = list_usage(limits, Usage({NC: 12}, 12, 0), [DS, DS], location="westeurope")
    assert [r["name"]["value"] for r in rows[1:-1]] == [DS, "standardFSv2Family", NC]  # extras sorted after the given ones
    assert all("/locations/westeurope/" in r["id"] for r in rows)


def test_list_usage_over_the_whole_catalog_with_a_real_size():
    families = sorted({row["family"] for row in all_series().values()})
    size = get_size("Standard_DS3_v2")
    usage = usage_of([NodeUse(size.family, size.vcpus)])
    rows = list_usage(QuotaLimits(), usage, families)
    assert len(rows) == len(families) + 2
    by_family = {r["name"]["value"]: r for r in rows}
    assert by_family[size.family]["currentValue"] == size.vcpus
    assert by_family["Standard NCASv3_T4 Family"]["id"].endswith("/usages/Standard_NCASv3_T4_Family")

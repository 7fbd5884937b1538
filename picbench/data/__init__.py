"""The evaluation data from its upstream sources: pinned to commits, verified against a manifest
shipped in the package, downloaded resumably and placed atomically (``picbench data fetch``)."""

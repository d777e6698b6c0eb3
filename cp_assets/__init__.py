"""corpus-proximity: Dagster assets that measure how far model outputs and eval questions sit from training corpora."""

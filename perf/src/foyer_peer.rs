//! foyer side by side: see `--engine foyer`.

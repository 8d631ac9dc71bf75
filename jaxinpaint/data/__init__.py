"""Input data: image sources (`sources`), mask generators (`masks`) and the grain pipeline (`pipeline`)."""

"""End-to-end test beds: real external parts that Corral's tests run against."""

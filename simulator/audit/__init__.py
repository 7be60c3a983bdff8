"""`ehrsim audit`: check every record of a written run against the clinical consistency rules of
rules/audit.yaml (kinds implemented in `checks`, tables read in blocks by `tables`, counted in `report`)."""

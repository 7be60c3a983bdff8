"""Teaching material made from a written run: readable case files (`cases`), a cohort browser page
(`browse`) and the data dictionary of the tables (`dictionary`).

Everything here reads what `ehrsim generate` wrote (its manifest, its CSV or Parquet tables and its FHIR
ndjson), never the engine, so it works on any run, including one made on another machine."""

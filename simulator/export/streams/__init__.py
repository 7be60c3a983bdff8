"""Dense monitoring streams (`ehrsim generate --streams icu,ward,ed,cgm,abpm --stream-interval 60`): the vital
signs a bedside monitor records during the chosen stays, and the home devices' readings (CGM, ambulatory blood
pressure), sampled after the simulation from the event table (docs/streams.md): `signals` makes one stay's
samples, `home` the home devices' windows and samples, `fhir` their FHIR text, `writer` writes a run's."""

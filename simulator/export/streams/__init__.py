"""Dense monitoring streams (`ehrsim generate --streams icu,ward,ed --stream-interval 60`): the vital signs a
bedside monitor records during the chosen stays, sampled after the simulation from the event table
(docs/streams.md): `signals` makes one stay's samples, `fhir` their FHIR text, `writer` writes a run's."""

"""The evaluation stage: the model against a baseline on benchmark questions, judged by the ensemble.

Split by job:

- :mod:`~moaa_ray.pipeline.evaluate.stage`: the stage itself (:func:`~.stage.evaluate`), its models
  and streaming steps, and ``results.json``;
- :mod:`~moaa_ray.pipeline.evaluate.questions`: question states, ids and baselines;
- :mod:`~moaa_ray.pipeline.evaluate.steps`: the answering, judging and grading steps;
- :mod:`~moaa_ray.pipeline.evaluate.rows`: the rows written, one per question, and the judgment audit;
- :mod:`~moaa_ray.pipeline.evaluate.results`: ``results.json``'s figures from the rows;
- :mod:`~moaa_ray.pipeline.evaluate.report`: ``report.md`` and ``scores.png`` across evaluated models.

The judging it shares with the preference stage is :mod:`moaa_ray.pipeline.judging`'s.
"""

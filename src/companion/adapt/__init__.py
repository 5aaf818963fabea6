"""The adaptation half of arXiv:2406.04112: BERT fine-tuned on GLUE with LoRA and Deep LoRA (float32).

Modules, in pipeline order: ``glue`` (tasks and files) → ``batching`` (tokenisation, few-shot
draws, batches) → ``bert`` (the backbone) → ``lora`` (the adapter layer and its
initialisations) → ``adapters`` (injection into a model, merge, save/load) → ``training``
(``FinetuneConfig``, ``fit``, ``finetune``, ``RunResult``); ``metrics`` scores predictions.
"""

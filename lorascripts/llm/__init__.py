"""Text LoRA for causal language models (`task: llm`): data, training with peft, generation."""

"""Train a jaxformer model: `python train.py --config=configs/NAME.py --workdir=DIR`.

With no arguments it trains the default, a Shakespeare language model, into runs/shakespeare_lm.
The logic lives in jaxformer/training/ (loop.py has the train loop), so tests and notebooks
can import it.
"""

from jaxformer.training.main import cli

if __name__ == '__main__':
  cli()

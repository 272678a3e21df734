"""``python -m nvan_tf.video ...`` is ``nvan-track ...``."""

import nvan_tf

if __name__ == "__main__":
    nvan_tf._run_command("nvan_tf.video")

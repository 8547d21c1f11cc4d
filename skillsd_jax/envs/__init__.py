"""Multi-turn text environments (no JAX here). `make(name, **kwargs)` builds one by name."""

from skillsd_jax.envs.base import Env, Info, TurnCountingEnv, make, register, registered
import skillsd_jax.envs.sokoban  # noqa: F401,E402  (registers "sokoban")
import skillsd_jax.envs.textworld_env  # noqa: F401,E402  (registers "textworld")
import skillsd_jax.envs.alfworld  # noqa: F401,E402  (registers "alfworld")
import skillsd_jax.envs.search_qa  # noqa: F401,E402  (registers "search_qa")
import skillsd_jax.envs.appworld_env  # noqa: F401,E402  (registers "appworld"; appworld itself loads lazily)
import skillsd_jax.envs.webshop_env  # noqa: F401,E402  (registers "webshop"; needs a server only when built)

__all__ = ["Env", "Info", "TurnCountingEnv", "make", "register", "registered"]

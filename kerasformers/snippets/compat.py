"""Python helpers that ported bert4keras code calls: argument decorators, identity tests."""

import functools

__all__ = ["delete_arguments", "insert_arguments", "is_one_of", "is_py2"]

# bert4keras ran on Python 2 as well; ported code sometimes checks this flag.
is_py2 = False


def is_one_of(x, ys):
    """Whether `x` is (by identity) one of `ys`; unlike `in`, never calls `__eq__`."""
    return any(x is y for y in ys)


def insert_arguments(**arguments):
    """Decorator adding keyword arguments (with defaults) to a method, stored on `self`.

    Example:
        >>> class Layer:
        ...     @insert_arguments(scale=1.0)
        ...     def __init__(self, units):
        ...         self.units = units
        >>> Layer(3, scale=2.0).scale
        2.0
    """

    def decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for key, default in arguments.items():
                setattr(self, key, kwargs.pop(key, default))
            return func(self, *args, **kwargs)

        return new_func

    return decorator


def delete_arguments(*arguments):
    """Decorator making a method reject the named keyword arguments with a TypeError."""

    def decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for key in arguments:
                if key in kwargs:
                    raise TypeError(
                        f"{type(self).__name__} got an unexpected keyword argument {key!r}"
                    )
            return func(self, *args, **kwargs)

        return new_func

    return decorator

//! The current address of an actor that a supervisor may restart: callers cast through this
//! slot and never hold an `ActorRef` that dies with one incarnation.

use arc_swap::ArcSwapOption;
use ractor::{ActorRef, Message};

pub(crate) struct Mailbox<M: Message>(ArcSwapOption<ActorRef<M>>);

impl<M: Message> Mailbox<M> {
    pub(crate) fn empty() -> Self {
        Self(ArcSwapOption::empty())
    }

    pub(crate) fn set(&self, actor: ActorRef<M>) {
        self.0.store(Some(std::sync::Arc::new(actor)));
    }

    /// Fire and forget. A message sent while the actor is down (between a crash and its
    /// restart, or after shutdown) is dropped: every sender here reports something the actor
    /// can do without, such as one request's outcome.
    pub(crate) fn cast(&self, message: M) -> bool {
        match &*self.0.load() {
            Some(actor) => actor.cast(message).is_ok(),
            None => false,
        }
    }
}

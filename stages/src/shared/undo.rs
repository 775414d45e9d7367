//! The one rollback idiom of the stages' ADD paths: each step that made something
//! pushes the step that removes it; when the ADD fails part way (an early return, `?`),
//! the guard is dropped and runs those steps, the latest first. A successful ADD commits
//! the guard, which forgets them. Undo steps are best effort: they cannot fail the ADD
//! whose error is already being returned.

/// Undo steps collected by a partly done ADD.
#[must_use = "an Undo guard undoes on drop unless committed"]
pub struct Undo<'a> {
    steps: Vec<Box<dyn FnOnce() + 'a>>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Self {
        Undo { steps: Vec::new() }
    }

    /// Add the step undoing what was just made (run before every step pushed earlier).
    pub fn push(&mut self, step: impl FnOnce() + 'a) {
        self.steps.push(Box::new(step));
    }

    /// The ADD succeeded: keep what it made.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Default for Undo<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some(step) = self.steps.pop() {
            step();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn dropped_guard_undoes_latest_first() {
        let log = RefCell::new(Vec::new());
        {
            let mut u = Undo::new();
            u.push(|| log.borrow_mut().push(1));
            u.push(|| log.borrow_mut().push(2));
            u.push(|| log.borrow_mut().push(3));
        }
        assert_eq!(*log.borrow(), vec![3, 2, 1]);
    }

    #[test]
    fn committed_guard_keeps_everything() {
        let log = RefCell::new(Vec::new());
        let mut u = Undo::new();
        u.push(|| log.borrow_mut().push(1));
        u.commit();
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn early_return_undoes() {
        let log = RefCell::new(Vec::new());
        let add = |fail: bool| -> Result<(), ()> {
            let mut u = Undo::new();
            u.push(|| log.borrow_mut().push("veth"));
            if fail {
                return Err(());
            }
            u.commit();
            Ok(())
        };
        assert!(add(false).is_ok());
        assert!(log.borrow().is_empty());
        assert!(add(true).is_err());
        assert_eq!(*log.borrow(), vec!["veth"]);
    }
}
